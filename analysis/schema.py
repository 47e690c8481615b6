"""The MLflow run schema: the one place that names kdx's tags, params and metrics.

The search writes runs with these names and the analysis reads them back;
neither spells a name itself.

- One experiment per search; one parent run (role "search") with the resolved
  config as an artifact; one "teacher" run; one run per trial (role
  "student"), nested under the parent with the `mlflow.parentRunId` tag;
  scratch twins have role "baseline" (ROLE_TWIN), assistants "assistant". A chain's
  assistants and student share `kdx.chain`; each names its own teacher in
  `kdx.teacher_run` and its whole line in `kdx.lineage`.
- `kdx.arch` is a stable, readable id of the student architecture, so a
  student pairs with its twin.
- Params: the resolved run config flattened to dotted keys (sampled keys are
  the same names, verbatim); `kdx.sampled` lists which were sampled.
- Metrics: val_acc and test_acc (fractions), params (count), latency_ms
  (batch-1 CPU, median), train_loss and loss/<term> per epoch (step=epoch).
  A language model's: val_loss and test_loss in nats per predicted token,
  val_ppl and test_ppl (their exp), val_acc and test_acc next-token accuracy.
"""

from __future__ import annotations

from typing import Any, Mapping

from distill.tasks import Score, task_named

__all__ = [
    "TAG_ROLE", "TAG_ARCH", "TAG_TRIAL", "TAG_SAMPLED", "TAG_STOPPED", "TAG_ERROR", "TAG_CONFIG_HASH", "TAG_PARENT",
    "TAG_TEACHER_RUN", "TAG_NODE", "TAG_CONTROL", "TAG_SEED_OF", "TAG_CHAIN", "TAG_STAGE", "TAG_LINEAGE", "CHAIN_DIRECT", "TAG_TEACHER_KEY", "TAG_CONFIG_KEY", "TAG_DUPLICATE_OF", "TAG_ARM", "TAG_GAIN_ARCH", "TAG_CANDIDATE", "TAG_TEXTBOOK", "TAG_CONTROL_OF", "TAG_START", "START_WORDS", "START_SHORT", "TAG_TEACHER_RECIPE",
    "TAG_PARETO", "TAG_PARETO_LABEL", "TAG_NOTE",
    "TEACHER_PARAMS", "TEACHER_VAL_ACC", "TEACHER_TEST_ACC", "TEACHER_TRAIN_S", "AGREEMENT", "TEACHER_KL", "TRAIN_S", "FINAL_ONLY",
    "ROLE_SEARCH", "ROLE_TEACHER", "ROLE_STUDENT", "ROLE_TWIN", "ROLE_ASSISTANT", "ROLE_FLOOR", "TAG_FLOOR",
    "VAL_ACC", "VAL_LOSS", "VAL_PPL", "TEST_LOSS", "TEST_PPL", "VAL_SPEARMAN", "TEST_SPEARMAN", "TEST_RECALL10", "TEST_GOLD_SPEARMAN", "TEST_SCORES", "START_VAL_SPEARMAN", "START_TEST_SPEARMAN", "STARTS", "TEACHER_TEST_LOSS", "FLOOR", "TEST_ACC", "PARAMS", "LATENCY", "TRAIN_LOSS", "EPOCHS", "BEST_EPOCH",
    "OBJECTIVES", "MODEL_DIR", "MODEL_WEIGHTS_FILE", "MODEL_CONFIG_FILE", "CONFIG_ARTIFACT", "SPACE_ARTIFACT", "IMPORTANCE_ARTIFACT",
    "QUALITY", "quality", "Score", "ACCURACY", "NEXT_TOKEN", "score_of", "arch_id", "run_name", "size_label", "flat_params", "loss_metric",
]

TAG_ROLE = "kdx.role"
TAG_ARCH = "kdx.arch"
TAG_TRIAL = "kdx.trial_id"  # Tune's trial id: one run per trial, found again on resume
TAG_SAMPLED = "kdx.sampled"  # comma-separated dotted keys the search sampled
TAG_STOPPED = "kdx.stopped_early"  # "true" when a scheduler stopped the trial: never on the front
TAG_ERROR = "kdx.error"  # a failed trial's error, one line
TAG_CONFIG_HASH = "kdx.config_hash"  # on the parent: which config this experiment ran
TAG_PARENT = "mlflow.parentRunId"
TAG_TEACHER_RUN = "kdx.teacher_run"  # on students and twins: the teacher run's id (lineage)
TAG_NODE = "kdx.node"  # the Ray node that ran the trial
TAG_SEED_OF = "kdx.seed_of"  # on a repeat with another seed: the run it repeats (a front student or its twin)
TAG_CONTROL = "kdx.control"  # "dark_knowledge" on runs whose KD targets had their non-target part shuffled
TAG_CHAIN = "kdx.chain"  # a teacher-assistant chain's id (its trial id) on its assistants and student; "direct" on the direct run
TAG_STAGE = "kdx.stage"  # an assistant's place in its chain: 1 next to the teacher
TAG_LINEAGE = "kdx.lineage"  # run ids from the teacher down to this run's own teacher, joined by ">"
CHAIN_DIRECT = "direct"
TAG_ARM = "kdx.arm"  # the equal-budget gain (workflows/gain.py): kd, twin, smooth, shuffled or same_recipe
TAG_GAIN_ARCH = "kdx.gain_arch"  # ... and the front architecture (kdx.arch) the arm measures
TAG_CANDIDATE = "kdx.candidate"  # a searched arm's recipe candidate: 1 .. search.recipe_trials
TAG_TEXTBOOK = "kdx.textbook"  # "true" on the arm's textbook candidate: always raced, and it wins a tie inside the noise
TAG_CONTROL_OF = "kdx.control_of"  # a control arm's run: the KD winner it is the control of
TAG_START = "kdx.start"  # where a student's weights started (train.init): a key of START_WORDS
TAG_TEACHER_RECIPE = "kdx.teacher_recipe"  # on the teacher run: how its weights were made (trained, fine-tuned, or used as it stands)
TAG_CONFIG_KEY = "kdx.config_key"  # a hash of the run's role and resolved config: equal keys train the same model
TAG_DUPLICATE_OF = "kdx.duplicate_of"  # a trial Optuna sampled again: it reports that earlier run's result and trains nothing
TAG_TEACHER_KEY = "kdx.teacher_key"  # on a student whose own teacher the space chose (teacher.* sampled): its cache key
TAG_PARETO = "kdx.pareto"  # "true" on the front's students as the last report saw it (filter: tags.`kdx.pareto` = 'true')
TAG_PARETO_LABEL = "kdx.pareto_label"  # ... and its label there, P1 the smallest
TAG_NOTE = "mlflow.note.content"  # a run's or an experiment's description: MLflow's UI renders it as markdown

# train.init's values as tables and sentences say them
START_WORDS = {"random": "random weights", "teacher": "the teacher's layers", "prune": "the teacher pruned to the student's shape"}
START_SHORT = {"teacher": "teacher start", "prune": "pruned start"}

ROLE_SEARCH = "search"
ROLE_TEACHER = "teacher"
ROLE_STUDENT = "student"
ROLE_TWIN = "baseline"  # a scratch twin; the stored tag value predates the word "twin" and stays, so old runs read alike
ROLE_ASSISTANT = "assistant"
# A reference model made with no training (`Task.floor`: model2vec's table for a sentence encoder), scored as a
# student is and drawn on the frontier; never a student, never exported.
ROLE_FLOOR = "floor"
TAG_FLOOR = "kdx.floor"  # on a floor run: what it is, in a phrase

VAL_ACC = "val_acc"
TEST_ACC = "test_acc"
VAL_LOSS = "val_loss"
VAL_PPL = "val_ppl"  # a language model's: exp(val_loss)
TEST_LOSS = "test_loss"
TEST_PPL = "test_ppl"
# An embedding's (distill/tasks/embed.py): Spearman's rho of its cosine similarities with its teacher's, recall@10 of the
# teacher's neighbours, and the mean squared difference of the two similarity matrices
VAL_SPEARMAN = "val_spearman"
TEST_SPEARMAN = "test_spearman"
TEST_RECALL10 = "test_recall10"
TEST_GOLD_SPEARMAN = "test_gold_spearman"  # with data.pairs: Spearman's rho of its cosine similarities with a gold set's scores
PARAMS = "params"
LATENCY = "latency_ms"
TRAIN_LOSS = "train_loss"
EPOCHS = "epochs"
BEST_EPOCH = "best_epoch"
# On student runs: the teacher it learned from (the search's, or its own when teacher.* was sampled).
TEACHER_PARAMS = "teacher_params"
TEACHER_VAL_ACC = "teacher_val_acc"
TEACHER_TEST_ACC = "teacher_test_acc"
TEACHER_TRAIN_S = "teacher_train_s"  # the seconds that teacher's training took (0: a user's checkpoint)
TEACHER_TEST_LOSS = "teacher_test_loss"  # a language model's teacher: nats per predicted test token
FLOOR = "test_floor"  # on a language model's teacher run: the data's entropy floor, nats per predicted test token (distill/datasets/hmm.py)
# Fidelity on the test split (Stanton et al. 2021): top-1 agreement with the run's own teacher,
# and KL(teacher || student) at T = 1. Twins are measured against the search's teacher.
AGREEMENT = "test_agreement"
TEACHER_KL = "test_kl"
TRAIN_S = "train_s"  # the run's own training time, build to test evaluation
# A student started from its teacher (train.init: teacher or prune), scored before any training (step 0):
# how much of the teacher survives the cut, and so how much training brought back.
START_VAL_ACC = "start_val_acc"
START_TEST_ACC = "start_test_acc"
START_TEST_LOSS = "start_test_loss"
START_VAL_SPEARMAN = "start_val_spearman"  # an embedding's (distill/tasks/embed.py)
START_TEST_SPEARMAN = "start_test_spearman"
STARTS = (START_VAL_ACC, START_TEST_ACC, START_TEST_LOSS, START_VAL_SPEARMAN, START_TEST_SPEARMAN)

# Objectives a search may name, with what a run reports for each.
OBJECTIVES = (VAL_ACC, VAL_LOSS, VAL_PPL, VAL_SPEARMAN, PARAMS, LATENCY, AGREEMENT, TEACHER_KL)
TEST_SCORES = (TEST_ACC, TEST_LOSS, TEST_SPEARMAN)  # what a trial reports to Tune beside its objectives
FINAL_ONLY = (AGREEMENT, TEACHER_KL)
# The objectives that say how good a model is (the others say what it costs), each with its better direction.
QUALITY = {VAL_ACC: "max", VAL_PPL: "min", VAL_LOSS: "min", VAL_SPEARMAN: "max"}


def quality(objectives: Mapping[str, str]) -> str | None:
    """The first of `objectives` that says how good a model is (val_acc, val_ppl, val_loss), or None."""
    return next((k for k in objectives if k in QUALITY), None)  # measured once a run ends: a scheduler cannot read them per epoch



# How a task's models are ranked and compared (distill.tasks owns each task's Score).
ACCURACY = task_named("classify").score
NEXT_TOKEN = task_named("lm").score


def score_of(task: str | None) -> Score:
    """The Score of the task a search run logged (`search.task`); a search logged before tasks: accuracy."""
    return task_named(task).score


# A student's (or teacher's) weights artifact: a folder of the safetensors file and the
# run config that rebuilds the model (analysis.store writes and reads it).
MODEL_DIR = "model"
MODEL_WEIGHTS_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "config.json"
CONFIG_ARTIFACT = "config.yaml"
SPACE_ARTIFACT = "space.yaml"
IMPORTANCE_ARTIFACT = "importance.json"  # on the teacher run of a search that prunes: every unit's score (distill/prune.py)


def loss_metric(term: str) -> str:
    return f"loss/{term}"


def arch_id(student: Mapping[str, Any]) -> str:
    """'mlp:depth=2,width=32' from a student section (family plus shape options; a factory's
    name plus its kwargs)."""
    shape = ",".join(f"{k}={student[k]}" for k in sorted(student)
                     if k not in ("family", "factory", "features") and student[k] not in (None, {}, []))  # unset keys (hf's) say nothing
    return f"{student.get('family') or student.get('factory')}:{shape}"


_SHORT = {"depth": "d", "width": "w", "heads": "h", "layers": "l", "kernel_size": "k"}  # first in a name, in this order


def _weight(w: float) -> str:
    return f"{w:.3g}".removeprefix("0")  # kd 0.9 reads "kd.9"


def size_label(n: float) -> str:
    """464, 4.5k, 27k, 1.2M: a parameter count at a glance."""
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if n >= div:
            v = n / div
            return f"{v:.1f}{unit}" if v < 10 else f"{v:.0f}{unit}"
    return f"{int(n)}"


def run_name(student: Mapping[str, Any], mix: Mapping[str, float], temperature: float | None, params: int, labels_loss: str = "ce") -> str:
    """A run's name that speaks in the runs table: 'cnn d2 w25 · T4 kd.9 · 4.5k' (architecture,
    recipe, size; a twin's recipe reads 'scratch'; `labels_loss` is the task's, the loss a twin learns from).
    Depth and width first: the column cuts names."""
    keys = sorted((k for k in student if k not in ("family", "factory", "features")), key=lambda k: (list(_SHORT).index(k) if k in _SHORT else len(_SHORT), k))
    shape = [k if student[k] is True else f"{_SHORT.get(k, k + '=')}{student[k]}" for k in keys if student[k] not in (False, None)]
    what = str(student.get("family") or str(student.get("factory", "")).rsplit(":", 1)[-1])
    terms = {k: w for k, w in mix.items() if k != labels_loss and w > 0}
    recipe = " ".join(([f"T{temperature:.3g}"] if "kd" in terms and temperature else []) + [f"{k}{_weight(w)}" for k, w in terms.items()])
    return " · ".join((" ".join([what, *shape]), recipe or "scratch", size_label(params)))


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A resolved run config as MLflow params: dotted keys, string values."""
    out: dict[str, str] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flat_params(v, key + "."))
        else:
            out[key] = "null" if v is None else str(v)
    return out
