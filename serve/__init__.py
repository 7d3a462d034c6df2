"""HTTP service that returns safetensors inits (FastAPI on uvicorn)."""
