"""Regenerate the README's config reference block from the pydantic models."""

from __future__ import annotations

from pathlib import Path

from agent.config_docs import END, START, config_reference

README = Path(__file__).resolve().parents[1] / "README.md"

text = README.read_text()
head, rest = text.split(START, 1)
_, tail = rest.split(END, 1)
README.write_text(f"{head}{START}\n{config_reference()}{END}{tail}")
print(f"updated {README}")
