"""A user's own model: `student: {factory: "pkg.mod:fn", <kwargs>...}`.

kdx calls `fn(**kwargs)`, adding `input_shape` (one sample's shape) and
`num_classes` when the function names them. The kwargs are ordinary config
keys, so a search space can range over them (`student.width: {int: [8, 64]}`).
They are checked against the function's signature before anything trains.

The model may return bare logits or `Outputs`. Feature losses (FitNet,
attention transfer, RKD) read named intermediate outputs: `features` lists
module paths of the model (as `named_modules()` spells them), shallow to deep,
whose outputs become the features of those names; `name=path` renames one
(`embedding=pool` is what RKD reads). They are captured with forward hooks, so
the model's own state dict is unchanged: a checkpoint saved from it loads into
the plain `fn(**kwargs)` module.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError, InvalidValue
from .base import Outputs, as_outputs

__all__ = ["factory_kwargs", "build_factory", "check_factory"]


def _import(spec: str) -> Any:
    from ..data import import_object  # the one importer of "pkg.mod:name", with its messages

    try:
        return import_object(spec, "")
    except ConfigError as e:
        raise InvalidValue("factory", str(e).removeprefix(": ")) from None


def factory_kwargs(fn: Any, spec: str, kwargs: dict, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None) -> dict:
    """The keyword arguments kdx passes to `fn`: the config's, plus the data's shape where named.
    A call the signature cannot take is an InvalidValue on the argument's key, naming the factory."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        raise InvalidValue("factory", f"{spec} is not a function kdx can call") from None
    given = dict(kwargs)
    for name, value in (("input_shape", input_shape), ("num_classes", num_classes)):
        if name in params and name not in given:
            given[name] = value if value is not None else 1  # a placeholder when only the signature is checked
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    unknown = [k for k in given if k not in params and not takes_any]
    if unknown:
        raise InvalidValue(unknown[0], f"{spec} takes no argument '{unknown[0]}' (it takes {', '.join(params) or 'none'})")
    missing = [n for n, p in params.items() if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in given]
    if missing:
        raise InvalidValue(missing[0], f"{spec} needs argument '{missing[0]}', which the config does not give")
    return given


def check_factory(spec: str, kwargs: dict, features: list[str]) -> None:
    """Before any work (a config's checks): the factory imports and its signature takes these kwargs."""
    factory_kwargs(_import(spec), spec, kwargs)
    for item in features:
        if not isinstance(item, str) or not item.rpartition("=")[2]:
            raise InvalidValue("features", f"expected module paths ('layer1' or 'name=layer1'), got {item!r}")


class _Tap:
    """A forward hook on one named module: keeps its latest output."""

    def __init__(self, store: dict, name: str):
        self.store, self.name = store, name

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        self.store[self.name] = output[0] if isinstance(output, tuple) else output


class _Gather:
    """A forward hook on the whole model: its output as `Outputs` with the tapped features.
    Hooks are objects, not closures, so a deepcopy or pickle of the model carries its own."""

    def __init__(self, store: dict, names: list[str]):
        self.store, self.names = store, names

    def __call__(self, module: nn.Module, args: Any, output: Any) -> Outputs:
        out = as_outputs(output)
        feats = {**out.features, **{n: self.store[n] for n in self.names if n in self.store}}
        self.store.clear()  # hold no activations between calls (and a deepcopy of the model has none to copy)
        if "embedding" in feats:  # what the classifier reads, last and flat as in kdx's families
            feats["embedding"] = feats.pop("embedding").flatten(1)
        return Outputs(out.logits, feats, out.attentions)


def _tap(model: nn.Module, features: list[str], key: str) -> None:
    modules = dict(model.named_modules())
    store: dict[str, Tensor] = {}
    names = []
    for item in features:
        name, _, path = item.rpartition("=")
        if path not in modules:
            raise ConfigError(f"{key}.features: the model has no module '{path}'")
        modules[path].register_forward_hook(_Tap(store, name or path))
        names.append(name or path)
    model.register_forward_hook(_Gather(store, names))  # hooks leave the state dict alone: the model keeps its own keys


def build_factory(spec: str, kwargs: dict, features: list[str], input_shape: tuple[int, ...], num_classes: int, key: str) -> nn.Module:
    """The user's model, its forward returning `Outputs` with the named features when any are listed."""
    try:
        fn = _import(spec)
        given = factory_kwargs(fn, spec, kwargs, tuple(input_shape), num_classes)
    except InvalidValue as e:
        raise ConfigError(f"{key}.{e.key}: {e}") from None
    try:
        model = fn(**given)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}: {spec}({', '.join(f'{k}={v!r}' for k, v in given.items())}) failed: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{key}.factory: {spec} returned {type(model).__name__}, not a torch module")
    if features:
        _tap(model, features, key)
    return model
