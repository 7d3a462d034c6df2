"""Graph extraction: one forward pass on fake tensors, then a walk of its autograd graph.

The model's own parameters and buffers are never read or copied: the forward pass runs
through :func:`torch.func.functional_call` with stand-ins from PyTorch's ``FakeTensorMode``
(tensors with shapes and dtypes but no storage), so extraction costs the same for a 10k-
and a 1B-parameter model, works for models whose parameters live on ``meta``, and leaves
the model untouched. Fake tensors, unlike plain meta tensors, also let library code skip
data-dependent checks (``transformers`` does), so more models trace.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensorMode,
)
from torch.func import functional_call

from .errors import GraphBuildError, PartialGraphWarning
from .graph import ArchGraph, Node, ParamSpec
from .inputs import declared_inputs
from .tracing import quiet_torch_logs, traceable_experts
from .vocab import NORM_OPS, function_name, is_layout, op_of

_POSITIONAL_NAMES = ("pos", "wpe")
# Modules whose 2-D weight is stored (in_features, out_features): transformers' GPT-2 family.
IN_OUT_MODULES = frozenset({"Conv1D"})
INPUT = "<input>"  # stand-in name of the model's inputs
_IMAGE_SIZES = (32, 224, 28, 64, 299)


def build(model: Any, example_inputs: Any = None, *, name: str | None = None) -> ArchGraph:
    """Build the computational graph of ``model`` without touching its weights.

    Args:
        model: an ``nn.Module`` (real or on ``meta``), an :class:`~graphs.ArchSpec`, or a
            spec string such as ``"torchvision:resnet50"``.
        example_inputs: what to call ``forward`` with: a tensor, a tuple of positional
            arguments, or a dict of keyword arguments. Only shapes and dtypes matter. By
            default specs know their inputs, and plain modules are probed with a batch
            shaped for their first layer.
        name: a label for summaries; defaults to the spec or class name.
    """
    from .specs import ArchSpec, resolve

    if isinstance(model, str):
        model = resolve(model)
    if isinstance(model, ArchSpec):
        spec, module = model, model.build()
        inputs = example_inputs if example_inputs is not None else spec.example_inputs()
        if inputs is None:  # a python: spec with no known input: guessed from the module
            return build(module, name=name or spec.label)
        return _trace(module, [inputs], name or spec.label, example_inputs is not None)
    if not isinstance(model, nn.Module):
        raise GraphBuildError(
            f"expected a torch.nn.Module, an ArchSpec or a spec string, got "
            f"{type(model).__name__}")
    label = name or type(model).__name__
    candidates = [example_inputs] if example_inputs is not None else _candidate_inputs(model)
    if not candidates:
        raise GraphBuildError(
            f"cannot guess an input for {label}: pass example_inputs=(tensor, ...) shaped "
            "like a batch the model accepts")
    return _trace(model, candidates, label, example_inputs is not None)


def _trace(model: nn.Module, candidates: list, label: str, given: bool) -> ArchGraph:
    """The graph of the first input in ``candidates`` the model runs on; a clear error if none."""
    failures = []
    with traceable_experts(model), quiet_torch_logs():
        for inputs in candidates:
            try:
                return _Tracer(model, label).trace(inputs)
            except _ForwardFailed as err:
                failures.append(err)
    first = failures[0]
    if _data_dependent(first.cause):
        how = ("its output shape depends on the input values, which tracing without values "
               "(on fake tensors) cannot follow, and no module finished before it: build the "
               "graph of the part to initialize")
    elif given:
        how = "check the example_inputs you passed"
    else:
        how = "pass example_inputs=(tensor, ...) shaped like a batch the model accepts"
    cause = str(first.cause).strip().rstrip(".") or type(first.cause).__name__
    raise GraphBuildError(
        f"forward of {label} failed with input {first.described}: {cause}. {how}",
    ) from first.cause


def _data_dependent(err: BaseException) -> bool:
    """An op whose output shape depends on tensor values (``nonzero``, ``unique``...)."""
    return isinstance(err, (DataDependentOutputException, DynamicOutputShapeException))


class _ForwardFailed(Exception):
    def __init__(self, described: str, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.described, self.cause = described, cause


def _candidate_inputs(model: nn.Module) -> list[Any]:
    """The input the model's library declares (:mod:`graphs.inputs`), then the guesses from
    its first layer, each shape once."""
    declared = declared_inputs(model)
    found = [*([] if declared is None else [declared]), *_guess_inputs(model)]
    return list({_describe(inputs): inputs for inputs in found}.values())


def _guess_inputs(model: nn.Module) -> Iterator[Any]:
    """Plausible input batches for a plain module, from its first parameterized layer."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            for size in _IMAGE_SIZES:
                yield torch.empty(2, module.in_channels, size, size)
            return
        if isinstance(module, nn.Conv1d):
            yield torch.empty(2, module.in_channels, 128)
            return
        if isinstance(module, nn.Linear):
            yield torch.empty(2, module.in_features)
            return
        if isinstance(module, nn.Embedding):
            yield torch.zeros(2, 16, dtype=torch.long)
            return


def _stand_in(obj: Any) -> Any:
    """Same structure, every tensor replaced by an empty one (fake inside FakeTensorMode).

    Floating-point inputs require grad, so operations on the raw input (a residual branch
    that adds the input back, say) are recorded too.
    """
    if isinstance(obj, torch.Tensor):
        return torch.empty(obj.shape, dtype=obj.dtype, requires_grad=obj.is_floating_point())
    if isinstance(obj, tuple | list):
        return type(obj)(_stand_in(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _stand_in(v) for k, v in obj.items()}
    return obj


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, tuple | list):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"{obj.dtype} {tuple(obj.shape)}"
    if isinstance(obj, tuple | list):
        return "(" + ", ".join(_describe(o) for o in obj) + ")"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in obj.items()) + "}"
    return type(obj).__name__


def _output_roots(out: Any) -> Iterator[Any]:
    """Autograd functions of every tensor in a (nested) model output, in order."""
    if isinstance(out, torch.Tensor):
        if out.grad_fn is not None:
            yield out.grad_fn
    elif isinstance(out, dict):
        for v in out.values():
            yield from _output_roots(v)
    elif isinstance(out, tuple | list):
        for v in out:
            yield from _output_roots(v)
    elif hasattr(out, "to_tuple"):
        yield from _output_roots(out.to_tuple())


class _Tracer:
    """Runs the meta forward pass and turns its autograd graph into an ArchGraph."""

    def __init__(self, model: nn.Module, label: str) -> None:
        self.model, self.label = model, label
        self.names: dict[int, list[str]] = {}  # id(original param) -> all its state-dict keys
        for pname, p in model.named_parameters(remove_duplicate=False):
            self.names.setdefault(id(p), []).append(pname)
        self.module_types = {n: type(m).__name__ for n, m in model.named_modules()}

    def trace(self, inputs: Any) -> ArchGraph:
        roots, stand_ins, stopped = self._forward(inputs, train=False)
        graph = self._walk(roots, stand_ins)
        if graph.unused:  # some models (GoogLeNet, Inception) use branches only in training
            try:
                roots, stand_ins, stopped_training = self._forward(inputs, train=True)
            except _ForwardFailed:  # training mode wants more (detection models: targets)
                stopped_training = None
            else:
                trained = self._walk(roots, stand_ins)
                if len(trained.unused) < len(graph.unused):
                    graph, stopped = trained, stopped_training
        if stopped is not None and graph.unused:  # else only parameter-free ops were left
            shown = ", ".join(graph.unused[:3]) + (", ..." if len(graph.unused) > 3 else "")
            warnings.warn(
                f"the forward of {self.label} stopped at {stopped} (its output shape depends "
                f"on the input values, which tracing without values cannot follow). The graph "
                f"holds the {len(graph.params) - len(graph.unused)} parameters used before "
                f"that point; the other {len(graph.unused)} ({shown}) are unconnected nodes",
                PartialGraphWarning, stacklevel=2)
        return graph

    def _forward(self, inputs: Any, train: bool,
                 ) -> tuple[list[Any], dict[int, str], BaseException | None]:
        """Roots of the autograd graph, the stand-in of each leaf, and the data-dependent op
        the forward stopped at (then the roots are the outputs of every module that
        finished before it), if any."""
        # One fake tensor per distinct parameter, shared by all of its (tied) names.
        stand_ins: dict[int, str] = {}
        tensors: dict[str, torch.Tensor] = {}
        keep_alive = []
        finished: list[Any] = []  # every module's output, in case the forward cannot finish
        hooks = [m.register_forward_hook(lambda _m, _a, output: finished.append(output))
                 for m in self.model.modules()]
        stopped = None
        was_training = self.model.training
        self.model.train(train)
        try:
            with FakeTensorMode(allow_non_fake_inputs=True), torch.enable_grad():
                for pnames in self.names.values():
                    p = self.model.get_parameter(pnames[0])
                    fake = torch.empty(p.shape, dtype=p.dtype, requires_grad=True)
                    keep_alive.append(fake)
                    stand_ins[id(fake)] = pnames[0]
                    tensors.update(dict.fromkeys(pnames, fake))
                for bname, b in self.model.named_buffers(remove_duplicate=False):
                    tensors[bname] = torch.empty(b.shape, dtype=b.dtype)
                fake_inputs = _stand_in(inputs)
                keep_alive.extend(_tensors(fake_inputs))
                stand_ins.update({id(t): INPUT for t in _tensors(fake_inputs)})
                args, kwargs = ((), fake_inputs) if isinstance(fake_inputs, dict) else (
                    (fake_inputs,) if isinstance(fake_inputs, torch.Tensor)
                    else tuple(fake_inputs), {})
                out = functional_call(self.model, tensors, args, kwargs, tie_weights=False)
        except Exception as err:  # noqa: BLE001 - any failure in user code is reported
            if not (_data_dependent(err) and finished):
                raise _ForwardFailed(_describe(inputs), err) from err
            out, stopped = finished, err
        finally:
            self.model.train(was_training)
            for hook in hooks:
                hook.remove()
        roots = list(dict.fromkeys(_output_roots(out)))
        if not roots:
            raise GraphBuildError(
                f"the output of {self.label} does not depend on any parameter: nothing to trace")
        self._keep_alive = keep_alive
        return roots, stand_ins, stopped

    def _walk(self, roots: list[Any], stand_ins: dict[int, str]) -> ArchGraph:
        nodes: list[Node] = [Node(name="input", op="input")]
        edges: set[tuple[int, int]] = set()
        edge_list: list[tuple[int, int]] = []
        params: list[ParamSpec] = []
        owner: dict[str, int] = {}  # primary param name -> index in params
        unrecognized: Counter[str] = Counter()
        folded = 0
        # Each autograd function resolves to its sources: ("node", i) or ("param", name).
        sources: dict[Any, list[tuple[str, Any]]] = {}
        alive = []  # keeps function wrappers alive so identities stay valid during the walk

        stack: list[tuple[Any, bool]] = [(r, False) for r in reversed(roots)]
        while stack:
            fn, expanded = stack.pop()
            if fn in sources:
                continue
            children = [c for c, _ in fn.next_functions if c is not None] if hasattr(
                fn, "next_functions") else []
            if not expanded:
                alive.append(fn)
                stack.append((fn, True))
                stack.extend((c, False) for c in reversed(children) if c not in sources)
                continue
            fname = function_name(fn)
            if fname == "AccumulateGrad":
                leaf = stand_ins[id(fn.variable)]
                sources[fn] = [("node", 0)] if leaf is INPUT else [("param", leaf)]
                continue
            inputs = _dedupe(s for c in children for s in sources[c])
            if is_layout(fname):
                folded += 1
                sources[fn] = inputs
                continue
            index = len(nodes)
            pnames = [s[1] for s in inputs if s[0] == "param"]
            op = self._op(op_of(fname), pnames)
            if op == "generic":
                unrecognized[fname] += 1
            owned = []
            for pname in pnames:
                if pname in owner:
                    continue
                owner[pname] = len(params)
                owned.append(len(params))
                params.append(self._param_spec(pname, index, op))
            nodes.append(Node(name=self._node_name(op, index, pnames), op=op,
                              attrs=_attrs(fn, op), params=tuple(owned), torch_op=fname))
            preds = [s[1] for s in inputs if s[0] == "node"] or [0]
            for p in preds:
                if (p, index) not in edges:
                    edges.add((p, index))
                    edge_list.append((p, index))
            sources[fn] = [("node", index)]

        unused = [n for ns in self.names.values() if (n := ns[0]) not in owner]
        for pname in unused:
            index = len(nodes)
            owner[pname] = len(params)
            params.append(self._param_spec(pname, index, "unused"))
            nodes.append(Node(name=pname.rpartition(".")[0] or pname, op="unused",
                              params=(len(params) - 1,)))
        del alive
        return ArchGraph(nodes=nodes, edges=edge_list, params=params, name=self.label,
                         unrecognized=dict(unrecognized), folded=folded, unused=unused)

    def _module_type(self, pname: str) -> str:
        return self.module_types.get(pname.rpartition(".")[0], "")

    def _op(self, op: str, pnames: list[str]) -> str:
        """Refine an op by the parameters it consumes (a matmul with a weight is a linear)."""
        if not pnames:
            return "matmul" if op == "linear" else op
        shapes = [self.model.get_parameter(n).dim() for n in pnames]
        module_type = self._module_type(pnames[0])
        if op == "matmul":
            return "linear"
        if op == "embedding" and any(k in pnames[0].lower() for k in _POSITIONAL_NAMES):
            return "pos_embedding"
        if op == "mul" and "Norm" in module_type:
            return "rms_norm"
        if op == "mul":
            return "scale"
        if op == "add" and max(shapes) >= 2:
            return "pos_embedding"
        if op == "concat":
            return "token"
        if op == "batch_norm" and "Instance" in module_type:
            return "instance_norm"
        return op

    def _param_spec(self, pname: str, node: int, op: str) -> ParamSpec:
        p = self.model.get_parameter(pname)
        leaf = pname.rpartition(".")[2]
        if op in NORM_OPS:
            role = "norm_bias" if leaf.endswith("bias") else "norm_weight"
        elif op in ("embedding", "pos_embedding", "token", "scale"):
            role = op
        elif leaf.endswith("bias") or (p.dim() == 1 and op in ("conv", "linear", "add")):
            role = "bias"
        elif p.dim() >= 2:
            role = "weight"
        else:
            role = "other"
        tied = tuple(self.names[id(p)][1:])
        in_out = role == "weight" and p.dim() == 2 and self._module_type(pname) in IN_OUT_MODULES
        return ParamSpec(name=pname, node=node, role=role, shape=tuple(p.shape),
                         dtype=str(p.dtype).removeprefix("torch."), tied=tied, in_out=in_out)

    @staticmethod
    def _node_name(op: str, index: int, pnames: list[str]) -> str:
        if pnames:
            return pnames[0].rpartition(".")[0] or pnames[0]
        return f"{op}_{index}"


def _dedupe(items: Iterator[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return list(dict.fromkeys(items))


def _attrs(fn: Any, op: str) -> dict[str, int]:
    """Integer hyperparameters of conv and pooling ops, from the autograd function."""
    if op not in ("conv", "max_pool", "avg_pool"):
        return {}
    out = {}
    for key in ("stride", "padding", "dilation", "groups", "transposed"):
        value = getattr(fn, f"_saved_{key}", None)
        if value is None:
            continue
        out[key] = int(max(value)) if isinstance(value, tuple | list) else int(value)
    return out
