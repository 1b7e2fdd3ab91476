"""Files of institutions (the OpenAI Files API): metadata in the store, bytes in a file store.

Used by the Files routes, by batches (input and output files) and by training jobs.
"""

from verbund.files._agent import AgentBlobStore
from verbund.files._blobs import BlobStore, BlobWriter, LocalBlobStore, check_key, write_blob
from verbund.files._lifecycle import FileLifecycle, file_expiry
from verbund.files._sealed import SealedBlobStore, file_key
from verbund.files._service import (
    UPLOAD_PURPOSES,
    DeleteGuard,
    FileObject,
    FilePage,
    FilePurpose,
    FileService,
    Upload,
    clean_filename,
    new_file_id,
)
from verbund.files._where import storage_site

__all__ = [
    "UPLOAD_PURPOSES",
    "AgentBlobStore",
    "BlobStore",
    "BlobWriter",
    "DeleteGuard",
    "FileLifecycle",
    "FileObject",
    "FilePage",
    "FilePurpose",
    "FileService",
    "LocalBlobStore",
    "SealedBlobStore",
    "Upload",
    "check_key",
    "clean_filename",
    "file_expiry",
    "file_key",
    "new_file_id",
    "storage_site",
    "write_blob",
]
