"""What `GET /metrics` reports, in Prometheus' text format (as TorchServe and Triton expose theirs):
requests by route and status, queue depth, batch sizes, and latency quantiles over recent requests."""
from collections import Counter, deque

import numpy as np

QUANTILES = (0.5, 0.9, 0.99)


class Metrics:
    def __init__(self, window: int = 1000):
        self.requests: Counter[tuple[str, int]] = Counter()
        self.latency_s = {name: deque(maxlen=window) for name in ("request", "queue", "inference")}

    def record(self, route: str, status: int) -> None:
        self.requests[route, status] += 1

    def observe(self, request_s: float, queue_s: float, inference_s: float) -> None:
        """The timings of one answered prediction."""
        for name, value in (("request", request_s), ("queue", queue_s), ("inference", inference_s)):
            self.latency_s[name].append(value)

    def render(self, queue_depth: int, queue_size: int, batch_sizes: Counter[int]) -> str:
        lines = ["# HELP convnext_requests_total Requests answered, by route and HTTP status.",
                 "# TYPE convnext_requests_total counter"]
        lines += [f'convnext_requests_total{{route="{route}",code="{code}"}} {count}'
                  for (route, code), count in sorted(self.requests.items())]
        lines += ["# HELP convnext_queue_depth Requests waiting for the inference thread.",
                  "# TYPE convnext_queue_depth gauge", f"convnext_queue_depth {queue_depth}",
                  "# TYPE convnext_queue_capacity gauge", f"convnext_queue_capacity {queue_size}",
                  "# HELP convnext_batches_total Batches run, by the number of requests in them.",
                  "# TYPE convnext_batches_total counter"]
        lines += [f'convnext_batches_total{{size="{size}"}} {count}' for size, count in sorted(batch_sizes.items())]
        for name, values in self.latency_s.items():
            metric = f"convnext_{name}_latency_seconds"
            lines += [f"# HELP {metric} {name} latency over the last {values.maxlen} predictions.",
                      f"# TYPE {metric} summary"]
            if values:
                for q, v in zip(QUANTILES, np.quantile(np.fromiter(values, float), QUANTILES)):
                    lines.append(f'{metric}{{quantile="{q}"}} {v:.6f}')
            lines += [f"{metric}_sum {sum(values):.6f}", f"{metric}_count {len(values)}"]
        return "\n".join(lines) + "\n"
