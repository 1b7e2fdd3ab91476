"""Receiving a multipart/form-data upload as a stream, straight into the file store.

Only one file part (``file``) and a few small text fields are accepted. The file's bytes
go to a :class:`verbund.files.Upload` as they arrive, so a large upload never sits in
memory or in a temporary folder, and one over the limit stops with 413 at the limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from verbund.errors import BadRequest, PayloadTooLarge
from verbund.files import FileService, Upload, clean_filename

MAX_FIELDS = 16
MAX_FIELD_BYTES = 4096
FORM_OVERHEAD = 64 * 1024


@dataclass
class ReceivedForm:
    fields: dict[str, str] = field(default_factory=dict)
    upload: Upload | None = None
    filename: str = ""
    complete: bool = False  # the closing boundary arrived


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    data: bytearray = field(default_factory=bytearray)
    is_file: bool = False


def _malformed(detail: str) -> BadRequest:
    return BadRequest(f"Malformed multipart body: {detail}.", code="invalid_multipart")


async def receive_upload(
    request: Request,
    files: FileService,
    *,
    site: str | None = None,
    data_class: str | None = None,
) -> ReceivedForm:
    """Parse the form, streaming the file to the file store (``site``'s agent, if given);
    on any error the partial upload is removed before raising."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise BadRequest(
            "Uploads must be sent as multipart/form-data with fields 'file' and 'purpose'.",
            code="invalid_content_type",
        )
    declared = request.headers.get("content-length")
    too_large = files.max_upload_bytes + FORM_OVERHEAD
    if declared is not None and declared.isdigit() and int(declared) > too_large:
        raise PayloadTooLarge(
            f"The file exceeds the upload limit of {files.max_upload_bytes} bytes."
        )
    form = ReceivedForm()
    part = _Part()
    header_name = bytearray()
    header_value = bytearray()
    pending: list[bytes] = []

    def on_part_begin() -> None:
        nonlocal part
        part = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        part.headers[bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, opts = parse_options_header(part.headers.get(b"content-disposition", b""))
        if b"name" not in opts:
            raise _malformed("a part has no name")
        part.name = opts[b"name"].decode("utf-8", "replace")
        if b"filename" in opts:
            if part.name != "file" or form.upload is not None:
                raise _malformed("only one file, in the field 'file', is accepted")
            try:
                raw_name = opts[b"filename"].decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(
                    "The filename is not valid UTF-8.", code="invalid_filename", param="file"
                ) from None
            form.filename = clean_filename(raw_name)
            form.upload = files.begin_upload(site, data_class)
            part.is_file = True
        elif len(form.fields) >= MAX_FIELDS:
            raise _malformed("too many fields")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.is_file:
            pending.append(bytes(data[start:end]))
        else:
            part.data.extend(data[start:end])
            if len(part.data) > MAX_FIELD_BYTES:
                raise _malformed(f"the field '{part.name}' is too long")

    def on_part_end() -> None:
        if not part.is_file:
            form.fields[part.name] = part.data.decode("utf-8", "replace")

    def on_end() -> None:
        form.complete = True

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_end": on_end,
        },
    )
    try:
        async for chunk in request.stream():
            try:
                parser.write(chunk)
            except FormParserError:
                raise _malformed("it could not be parsed") from None
            if form.upload is not None:
                for piece in pending:
                    await form.upload.write(piece)
            pending.clear()
        try:
            parser.finalize()
        except FormParserError:
            raise _malformed("it ended early") from None
        if not form.complete:
            raise _malformed("it ended before the closing boundary")
    except BaseException:
        if form.upload is not None:
            await form.upload.abort()
        raise
    return form
