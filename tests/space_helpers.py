"""What the search-space tests share (tests/test_space.py, tests/test_space_sampling.py): a base
run config to apply params to, and the preset spaces kdx ships (search_spaces/presets/)."""

BASE = {"data": {"name": "mnist1d"}, "teacher": {"family": "cnn"}, "student": {"family": "mlp", "width": 32}}
PRESET_NAMES = ["capacity_gap", "temperature_mix", "loss_mix", "full"]
