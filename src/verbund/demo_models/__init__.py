"""Domain models of the demo federation and the MLServer that serves them (OIP v2).

MLServer runs from its own virtual environment (``.venv-mlserver/``, made by
``scripts/_mlserver_env.sh``) because it pins older FastAPI and Starlette than the access
point. Models are trained there too (``train_digits.py`` runs as a script in that venv),
so the scikit-learn that loads a model is the one that saved it.
"""

from verbund.demo_models._mlserver import (
    MLSERVER_PYTHON_ENV,
    TRAINERS,
    find_mlserver_python,
    mlserver_command,
    model_settings,
    server_settings,
    trainer_script,
)

__all__ = [
    "MLSERVER_PYTHON_ENV",
    "TRAINERS",
    "find_mlserver_python",
    "mlserver_command",
    "model_settings",
    "server_settings",
    "trainer_script",
]
