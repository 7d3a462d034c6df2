"""HTTP service that returns safetensors inits (FastAPI on uvicorn).

    from serve import ServeConfig, create_app
    app = create_app(ServeConfig(generators=("untrained",), cache_dir="/tmp/inits"))

``hyperinit serve`` runs it with uvicorn; ``serve/ray_app.py`` deploys the same app on a Ray
cluster. See ``serve/README.md``. ``create_app`` is imported on first use, so that
``serve.config`` (what the CLI needs to build its parser) imports without torch.
"""

from typing import Any

from .config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'serve' has no attribute {name!r}")
