"""What every command of `python -m engine` shares: bad input exits 2 with one line per field on
stderr, and a config file is read the one way `validate` reads it."""

from __future__ import annotations

import sys

EXIT_INVALID = 2


def print_errors(errors) -> int:
    """Print (field, message) pairs one line each on stderr; returns the exit code for invalid input."""
    for field, msg in errors:
        print(f"{field}: {' '.join(str(msg).split())}", file=sys.stderr)
    return EXIT_INVALID


def load_config_file(path: str):
    """(ExperimentConfig, []) or (None, [(field, message)])."""
    from engine.config import ConfigError, ExperimentConfig

    try:
        return ExperimentConfig.from_file(path), []
    except ConfigError as exc:
        return None, exc.errors
    except FileNotFoundError:
        return None, [("config", f"file not found: {path}")]
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # YAML/JSON syntax errors are ValueErrors too
        return None, [("config", f"cannot read {path}: {_first_line(exc)}")]
    except Exception as exc:  # yaml.YAMLError
        return None, [("config", f"cannot parse {path}: {_first_line(exc)}")]


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
