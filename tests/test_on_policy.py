"""On-policy batches (distill/on_policy.py, GKD): the student's own continuations of data prompts,
scored by the teacher online on the sampled positions only; fraction 0 is the plain run exactly;
one-line errors where it cannot work."""

import pytest
import torch

from distill.data import IGNORE, load_data
from distill.errors import ConfigError
from distill.models import TokenShape, build_model
from distill.models.transformer import TransformerOptions
from distill.on_policy import sample_continuations
from distill.teacher import prepare_teacher
from distill.train import run
from test_lm import config


@pytest.fixture(scope="module")
def data():
    return load_data(config().data)


def on_policy(**p):
    return config(teacher={"outputs": "online"}, mix={"ce": 0.5, "token_kd": 0.5}, train={"on_policy": p})


def test_continuations_keep_the_prompt_and_label_only_what_was_sampled():
    model = build_model("transformer", TransformerOptions(dim=8, depth=1, heads=2), TokenShape(12, vocab=20, task="lm"), 20)
    x = torch.randint(1, 20, (5, 12))
    ids, labels = sample_continuations(model, x, prompt=4, new=5, pad_id=0, generator=torch.Generator().manual_seed(0))
    again, _ = sample_continuations(model, x, prompt=4, new=5, pad_id=0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ids, again) and torch.equal(ids[:, :4], x[:, :4]) and (ids[:, 9:] == 0).all()  # seeded; padding after
    assert torch.equal(labels[:, 3:8], ids[:, 4:9])  # position t predicts the sampled id t + 1
    assert (labels[:, :3] == IGNORE).all() and (labels[:, 8:] == IGNORE).all()  # the prompt and the padding predict nothing
    assert model.training  # left as it was found


def test_fraction_zero_is_the_plain_run_and_one_trains_on_the_students_own_samples(data):
    teacher = prepare_teacher(on_policy(fraction=1.0), data, keys=["logits"], log=lambda s: None)
    before = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    plain = run(config(teacher={"outputs": "online"}, mix={"ce": 0.5, "token_kd": 0.5}), data, teacher)
    zero = run(on_policy(fraction=0.0), data, teacher)
    one = run(on_policy(fraction=1.0, prompt=4, max_new_tokens=8), data, teacher)
    assert zero.val_loss == plain.val_loss and zero.test_loss == plain.test_loss  # its draws leave the data's order alone
    assert one.val_loss != plain.val_loss and one.history[-1].losses["token_kd"] >= 0
    assert all(torch.equal(v, before[k]) for k, v in teacher.module.state_dict().items())  # the teacher only scores


def test_where_on_policy_cannot_work_is_one_line(data):
    with pytest.raises(ConfigError, match="^teacher.outputs: train.on_policy samples new sequences"):
        config(mix={"ce": 0.5, "token_kd": 0.5}, train={"on_policy": {"fraction": 0.5}})
    with pytest.raises(ConfigError, match="^train.on_policy: .*language-model dataset and a weighted next-token loss"):
        config(teacher={"outputs": "online"}, train={"on_policy": {"fraction": 0.5}})
    with pytest.raises(ConfigError, match="^train.on_policy.fraction: must be in"):
        on_policy(fraction=1.5)
    teacher = prepare_teacher(on_policy(fraction=1.0), data, keys=["logits"], log=lambda s: None)
    with pytest.raises(ConfigError, match=r"^train.on_policy: prompt 8 \+ max_new_tokens 16 is more than the data's 12 positions"):
        run(on_policy(fraction=0.5), data, teacher)
    assert on_policy(fraction=0.5).scratch_twin().train.on_policy.fraction == 0  # the twin has no teacher to score samples
