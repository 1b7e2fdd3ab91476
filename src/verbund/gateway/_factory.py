"""An app factory for one access point served by several uvicorn worker processes.

``verbund gateway --workers N`` hands uvicorn the import string of :func:`app_from_env`;
every worker process calls it, reads the config file named in ``$VERBUND_CONFIG`` and
builds its own :class:`~verbund.gateway.Services` (own key cache, upstream clients,
probes). What the workers share goes through the store.

The usage spool is per process: two processes appending to and rotating one spool file
would lose records. Each worker therefore claims a numbered slot with an exclusive
``flock`` on ``<state_dir>/usage-spool/<name>.w<slot>.lock`` and runs as access point
``<name>.w<slot>``, so its spool is ``usage-spool/<name>.w<slot>/``. The lock dies with
the process; a restarted worker takes the free slot again and replays what its
predecessor left in that spool, so a killed worker loses no accepted record.
"""

from __future__ import annotations

import fcntl
import functools
import os
from pathlib import Path

from starlette.applications import Starlette

from verbund.config import FederationConfig, load_config
from verbund.errors import ConfigError
from verbund.gateway._app import create_app
from verbund.server import CONFIG_ENV, serving

__all__ = ["CONFIG_ENV", "app_from_env", "claim_worker_slot", "for_worker"]

MAX_SLOTS = 64


def claim_worker_slot(lock_dir: Path, name: str) -> tuple[int, int]:
    """The lowest free slot number and the open file descriptor that holds its lock."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(MAX_SLOTS):
        fd = os.open(lock_dir / f"{name}.w{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return slot, fd
    raise ConfigError([("gateway.workers", f"more than {MAX_SLOTS} workers share {lock_dir}")])


def for_worker(config: FederationConfig, slot: int) -> FederationConfig:
    """The config as worker ``slot`` runs it: its own access point name, hence own spool."""
    gateway = config.gateway.model_copy(update={"name": f"{config.gateway.name}.w{slot}"})
    return config.model_copy(update={"gateway": gateway})


def app_from_env() -> Starlette:
    """Called once in every worker process by uvicorn (``factory=True``)."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError([("", f"${CONFIG_ENV} must name the federation config file")])
    config = load_config(Path(path))
    spool_root = Path(config.gateway.state_dir) / "usage-spool"
    slot, lock_fd = claim_worker_slot(spool_root, config.gateway.name)
    # the parent of a worker is uvicorn's supervisor: an admin drain asks it to drain all
    started = functools.partial(serving, supervisor=os.getppid())
    app = create_app(for_worker(config, slot), admin_key=config.admin_key(), on_started=started)
    app.state.worker_slot = slot
    app.state.worker_lock_fd = lock_fd  # held open for the life of the process
    return app
