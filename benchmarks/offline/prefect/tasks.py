from typing import Any as Task  # noqa: F401


def exponential_backoff(backoff_factor: float):
    return lambda retries: [backoff_factor * 2 ** i for i in range(retries)]
