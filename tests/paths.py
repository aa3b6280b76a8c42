"""Where the checkout under test is: tests run from a checkout, and some drive it as a user would
(its configs, its data, `ray job submit --working-dir`)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
