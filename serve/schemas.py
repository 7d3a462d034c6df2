"""Request and response bodies of the HTTP API (pydantic models; they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
)

from graphs.specs import NUM_CLASSES_MAX, check_finite
from hyperinit.validation import SEED_MAX

Dtype = Literal["float32", "float16", "bfloat16"]
REQUEST_FIELDS = ("arch", "num_classes", "seed", "noise", "generator", "dtype", "config", "task")
TASK_DIM_MAX = 1024  # longest task descriptor a request may send
TASK_TEXT_MAX = 1000  # longest task a request may name
DescriptorValue = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Descriptor = Annotated[list[DescriptorValue], Field(min_length=1, max_length=TASK_DIM_MAX)]
TaskText = Annotated[str, Field(strict=True, min_length=1, max_length=TASK_TEXT_MAX)]


def _task_form(value: Any) -> str:
    """Which form a request's task has, so errors say ``task.names`` or ``task.descriptor``."""
    return "names" if isinstance(value, str) else "descriptor"


Task = Annotated[Annotated[Descriptor, Tag("descriptor")] | Annotated[TaskText, Tag("names")],
                 Discriminator(_task_form)]


class InitRequest(BaseModel):
    """What to generate: an architecture, and how (generator, seed, noise, dtype, task)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"arch": "torchvision:resnet18", "num_classes": 10, "seed": 0},
        {"arch": "hf:gpt2", "config": {"n_layer": 2, "n_embd": 128, "n_head": 4},
         "dtype": "bfloat16"},
        {"arch": {"model_type": "llama", "hidden_size": 256, "intermediate_size": 688,
                  "num_hidden_layers": 2, "num_attention_heads": 4}, "seed": 7},
        {"arch": "torchvision:resnet18", "num_classes": 3,
         "generator": "my-task-diffusion", "task": [0, 0, 0, 1, 0, 1, 0, 0, 1, 0]},
        {"arch": "torchvision:resnet18", "num_classes": 3,
         "generator": "my-task-diffusion", "task": "cat,dog,ship"},
    ]})

    arch: str | dict[str, Any] = Field(
        description="A spec string (`torchvision:NAME`, `hf:MODEL_TYPE`, `timm:NAME`), or a "
                    "`transformers` config object: a JSON object with `model_type` (resolved as "
                    "`hf:<model_type>`, the other keys override the config). `python:` specs and "
                    "local paths are refused: the service never runs or reads user code or files.",
        examples=["torchvision:resnet18", "hf:gpt2",
                  {"model_type": "bert", "num_hidden_layers": 2}])
    num_classes: int | None = Field(
        default=None, ge=1, le=NUM_CLASSES_MAX, strict=True,
        description="Classifier size (`num_labels` for transformers); default: the model's own.")
    seed: int = Field(
        default=0, ge=0, le=SEED_MAX, strict=True,
        description="A seed gives fixed bytes; other seeds give other, equally good inits. It "
                    "draws the `noise` and, for a diffusion generator, the sampling noise.")
    noise: float | None = Field(
        default=None, ge=0, le=1, strict=True, allow_inf_nan=False,
        description="Fraction of each weight's variance replaced by Gaussian noise (0: the "
                    "prediction itself); default: the generator's own, as in "
                    "`hyperinit.predict`.")
    generator: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="A generator name from `GET /v1/generators`; default: the server's default.")
    dtype: Dtype | None = Field(
        default=None, description="dtype of floating-point tensors; default: the model's.")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Constructor keyword arguments (torchvision, timm) or `transformers` config "
                    "overrides (hf), as JSON values.",
        examples=[{"n_layer": 2, "n_embd": 128, "n_head": 4}])
    task: Task | None = Field(
        default=None,
        description="The task the init is for, for a generator conditioned on tasks (a "
                    "weight-diffusion model trained on a zoo over tasks): its descriptor "
                    "vector, whose length is the generator's `config.task_dim` in `GET "
                    "/v1/generators`, or, when that config has `task_classes`, the names or "
                    "indices of the task's classes, comma-separated. For CIFAR-10 class-subset "
                    "tasks the descriptor is 1 for each class the task holds, in CIFAR-10's "
                    "order (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, "
                    "truck), else 0: `[0,0,0,1,0,1,0,0,1,0]` is `\"cat,dog,ship\"`. Default: "
                    "no task. A generator that takes no task (a hypernetwork, an unconditional "
                    "diffusion model), a descriptor of another length, or a class it does not "
                    "name is refused (422 `invalid_task`).",
        examples=[[0, 0, 0, 1, 0, 1, 0, 0, 1, 0], "cat,dog,ship"])

    @field_validator("arch", "config")
    @classmethod
    def _finite(cls, value: str | dict[str, Any], info: ValidationInfo) -> str | dict[str, Any]:
        """The rule ``graphs.resolve`` applies: no Infinity or NaN in options."""
        if isinstance(value, dict):
            check_finite(value, info.field_name)
        return value


class ErrorBody(BaseModel):
    """Every error response: a stable code, a message saying what was wrong and what works."""

    error: str = Field(description="Machine-readable code, e.g. `unknown_architecture`.",
                       examples=["unknown_architecture"])
    detail: str = Field(description="What was wrong and what is accepted.",
                        examples=["unknown torchvision model 'resnet1'; did you mean resnet18?"])
    suggestions: list[str] | None = Field(
        default=None, description="Close valid names, for unknown architectures.")
    allowed: list[str] | None = Field(
        default=None, description="The accepted values, e.g. the generators this server has.")


class GeneratorInfo(BaseModel):
    """One generator a request may name."""

    name: str = Field(description="What a request puts in `generator`.", examples=["untrained"])
    id: str = Field(description="Name and weights revision, as stored in the init's metadata.",
                    examples=["untrained@seed0"])
    default: bool = Field(description="Used when a request names no generator.")
    kind: str = Field(description="The generator's kind (hyperinit.generator.KINDS).",
                      examples=["graph-hypernetwork"])
    config: dict[str, bool | int | float | str | list[str] | None] = Field(
        description="The generator's network config (GHNConfig or DiffusionConfig; a "
                    "task-conditioned one lists the classes its tasks name in `task_classes`).",
        examples=[{"hidden": 64, "layers": 3, "heads": 8, "rank": 32, "features": 512,
                  "decoder": "index"}])
    defaults: dict[str, bool | int | float | str | None] = Field(
        description="The checkpoint's prediction defaults (PredictDefaults): the noise a "
                    "request without `noise` gets, the largest weight it predicts, the "
                    "cap on each weight's gain and whether layer scales are divided by the "
                    "root of their number.",
        examples=[{"noise": 0.5, "orth": False, "max_numel": None, "max_gain": None,
                   "scale_by_depth": False}])


class GeneratorList(BaseModel):
    """The generators of this server."""

    generators: list[GeneratorInfo]


class Health(BaseModel):
    """Liveness and load."""

    status: Literal["ok"] = "ok"
    version: str = Field(description="hyperinit version.", examples=["0.3.0"])
    generations_in_flight: int = Field(ge=0, description="Generations running or queued.")
    cache_entries: int = Field(ge=0, description="Inits in the disk cache.")
    cache_bytes: int = Field(ge=0, description="Bytes of inits in the disk cache.")
