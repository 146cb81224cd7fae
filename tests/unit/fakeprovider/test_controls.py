"""The control routes: knobs over HTTP, stats, and health."""

from __future__ import annotations

import httpx
import pytest

from tests_support_marker import *  # noqa: F403  (placeholder)
