"""Search spaces over teacher-assistant chains (Mirzadeh et al. 2020, "Improved
Knowledge Distillation via Teacher Assistant").

A chain teacher -> a1 -> ... -> aN -> student is N+1 distillation runs, each
stage distilled from the one before. Each stage is an ordinary run config: the
experiment's base with, for assistants, the `chain.assistant` model section as
its `student`. A chain's space names the stage first, then the run-config key:

    a1.student.width:           {int: [16, 256], log: true}   # assistant 1's size
    a1.losses.kd.temperature:   {float: [1, 8], log: true}    # its temperature
    final.losses.kd.temperature: {float: [1, 8], log: true}   # the student's stage

The student itself is fixed (`student:` in the config): the question is which
assistant helps *this* student, so `final.student.*` is refused.
"""

from __future__ import annotations

from typing import Any, Mapping

from distill.config import RunConfig, check_key
from distill.errors import ConfigError

from .space import Param, apply, validate

__all__ = ["stage_names", "stage_check", "stage_bases", "split_params", "stage_configs", "validate_stages", "FINAL"]

FINAL = "final"


def stage_names(assistants: int) -> list[str]:
    return [f"a{k}" for k in range(1, assistants + 1)] + [FINAL]


def _split_key(key: str, assistants: int) -> tuple[str, str]:
    stage, _, rest = key.partition(".")
    names = stage_names(assistants)
    if stage not in names or not rest:
        raise ConfigError(f"a chain's space names the stage first ({', '.join(names)}), e.g. a1.student.width, not '{key}'")
    return stage, rest


def stage_check(assistants: int):
    """A key check for `parse_space`: a stage, then a key some run config has."""

    def check(key: str) -> None:
        stage, rest = _split_key(key, assistants)
        if stage == FINAL and rest.split(".")[0] == "student":
            raise ConfigError(f"the chain's student is fixed (set it under student:); search the assistants' shape instead, e.g. a1.{rest}")
        if rest.split(".")[0] == "teacher":
            raise ConfigError("each stage of a chain learns from the stage before it; the chain's teacher is set under teacher:")
        check_key(rest)

    return check


def stage_bases(base: Mapping, assistant: Mapping, assistants: int) -> dict[str, dict]:
    """Each stage's base run config (plain data): assistants train `assistant` (default: the student's section)."""
    model = dict(assistant) if assistant else dict(base.get("student") or {})
    bases = {name: {**base, "student": model} for name in stage_names(assistants)[:-1]}
    bases[FINAL] = dict(base)
    return bases


def split_params(params: Mapping[str, Any], assistants: int) -> dict[str, dict]:
    """{"a1.student.width": 64, "final.mix.kd": .9} -> {"a1": {"student.width": 64}, "final": {"mix.kd": .9}}."""
    out: dict[str, dict] = {name: {} for name in stage_names(assistants)}
    for key, value in params.items():
        stage, rest = _split_key(key, assistants)
        out[stage][rest] = value
    return out


def stage_configs(params: Mapping[str, Any], bases: Mapping[str, Mapping], seed: int | None = None) -> list[RunConfig]:
    """The run config of every stage, teacher side first; `seed` (a repeat) applies to all of them."""
    stages = split_params(params, len(bases) - 1)
    configs = []
    for name, base in bases.items():
        values = dict(stages[name]) | ({"seed": seed} if seed is not None else {})
        try:
            configs.append(apply(values, base))
        except ConfigError as e:
            raise ConfigError(f"chain stage {name}: {e}") from None
    return configs


def validate_stages(space: list[Param], bases: Mapping[str, Mapping]) -> None:
    """Every entry's bounds and choices make a valid run of its stage; conditions stay within a stage."""
    assistants = len(bases) - 1
    for name, base in bases.items():
        mine = []
        for p in space:
            stage, rest = _split_key(p.key, assistants)
            if stage != name:
                continue
            when = {}
            for cond_key, cond in p.when.items():
                cond_stage, cond_rest = _split_key(cond_key, assistants)
                if cond_stage != stage:
                    raise ConfigError(f"space.{p.key}.when: '{cond_key}' is another stage's key; a condition stays within its stage")
                when[cond_rest] = cond
            mine.append(Param(rest, p.kind, p.low, p.high, p.log, p.step, p.choices, p.value, when))
        try:
            validate(mine, base)
        except ConfigError as e:
            raise ConfigError(str(e).replace("space.", f"space.{name}.", 1)) from None
