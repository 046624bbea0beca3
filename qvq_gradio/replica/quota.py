"""The replica's ZeroGPU-like quota: the message ZeroGPU sends, and a request budget."""

from __future__ import annotations

import threading
import time

__all__ = ["QUOTA_MESSAGE", "Quota", "quota_message"]

#: What ZeroGPU Spaces say when the quota is used up (with the HTML link they carry).
QUOTA_MESSAGE = (
    "You have exceeded your GPU quota (60s requested vs. 56s left). "
    '<a style="white-space: nowrap;text-underline-offset: 2px;color: var(--body-text-color)" '
    'href="https://huggingface.co/settings/billing">Subscribe to Pro</a> to get more quota, '
    "or retry in 0:09:48"
)


def quota_message(retry: float) -> str:
    """ZeroGPU's quota wording, asking to retry in ``retry`` seconds (H:MM:SS)."""
    seconds = max(round(retry), 0)
    clock = f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return QUOTA_MESSAGE.replace("0:09:48", clock)


class Quota:
    """The replica's quota budget (see ``ReplicaConfig.quota_budget``)."""

    def __init__(self, budget: int | None, retry: float) -> None:
        self._budget, self._retry = budget, retry
        self._used = 0
        self._until = 0.0
        self._lock = threading.Lock()

    def refusal(self) -> str | None:
        """The quota message if this request is over the budget, else None (and count it)."""
        wait = self.wait()
        return None if wait is None else quota_message(wait)

    def wait(self) -> float | None:
        """Seconds until the quota is back if this request is over the budget, else None
        (and count it)."""
        if self._budget is None:
            return None
        with self._lock:
            now = time.monotonic()
            if self._until:
                if now < self._until:
                    return self._until - now
                self._until, self._used = 0.0, 0  # the quota is back
            if self._used >= self._budget:
                self._until = now + self._retry
                return self._retry
            self._used += 1
            return None
