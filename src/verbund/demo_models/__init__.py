"""Domain models of the demo federation and the OIP v2 servers that serve them.

scikit-learn runs on MLServer from ``.venv-mlserver/``; PyTorch, ONNX Runtime and
TensorFlow/Keras run on KServe's model server, each from its own venv (``.venv-torch``,
``.venv-onnx``, ``.venv-tf``): every venv is made by its script in ``scripts/``, never in
Verbund's own install. Models are trained in the venv of their framework (the scripts
``train_*.py`` run there and import nothing from Verbund), so the library that loads a
model is the one that saved it; the ONNX file is exported by the PyTorch training.
"""

from verbund.demo_models._environments import ENVIRONMENTS, find_python
from verbund.demo_models._kserve import kserve_command
from verbund.demo_models._mlserver import (
    MLSERVER_PYTHON_ENV,
    TRAINERS,
    find_mlserver_python,
    mlserver_command,
    model_settings,
    server_settings,
    trainer_script,
)
from verbund.demo_models._training import TrainingFailed, model_cache, train

__all__ = [
    "ENVIRONMENTS",
    "MLSERVER_PYTHON_ENV",
    "TRAINERS",
    "TrainingFailed",
    "find_mlserver_python",
    "find_python",
    "kserve_command",
    "mlserver_command",
    "model_cache",
    "model_settings",
    "server_settings",
    "train",
    "trainer_script",
]
