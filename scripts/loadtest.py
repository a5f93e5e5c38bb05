"""A bounded load generator for the service: `concurrency` clients on keep-alive connections send
`requests` predictions between them and stop by themselves (a time cap ends a run that stalls).

    report = asyncio.run(load("http://127.0.0.1:8000", png_bytes, requests=200, concurrency=8))
    print(report.line())   # "200 requests, 8 clients: 41.2 req/s, p50 180 ms, p99 260 ms, {200: 200}"
"""
import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Report:
    concurrency: int
    seconds: float
    statuses: Counter = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)  # of the 200 answers
    answers: list[dict] = field(default_factory=list)  # the 200 answers' JSON, when kept

    @property
    def throughput(self) -> float:
        return self.statuses[200] / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(1000 * np.percentile(self.latencies_s, q)) if self.latencies_s else float("nan")

    def as_dict(self) -> dict:
        return {"concurrency": self.concurrency, "requests": sum(self.statuses.values()),
                "seconds": round(self.seconds, 3), "req_per_s": round(self.throughput, 2),
                "p50_ms": round(self.percentile_ms(50), 1), "p99_ms": round(self.percentile_ms(99), 1),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}}

    def line(self) -> str:
        return (f"{sum(self.statuses.values())} requests, {self.concurrency} clients: {self.throughput:.1f} req/s, "
                f"p50 {self.percentile_ms(50):.0f} ms, p99 {self.percentile_ms(99):.0f} ms, {dict(self.statuses)}")


async def load(url: str, body: bytes, requests: int = 200, concurrency: int = 8, content_type: str = "image/png",
               query: str = "top_k=5", time_cap_s: float = 120.0, keep_answers: bool = False,
               headers: dict | None = None) -> Report:
    import httpx

    report = Report(concurrency, 0.0)
    remaining = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client(http: httpx.AsyncClient) -> None:
        for _ in remaining:  # one shared iterator: the clients share the request count
            sent = time.perf_counter()
            response = await http.post(f"{url}/v1/predict?{query}", content=body,
                                       headers={"Content-Type": content_type, **(headers or {})})
            report.statuses[response.status_code] += 1
            if response.status_code == 200:
                report.latencies_s.append(time.perf_counter() - sent)
                if keep_answers:
                    report.answers.append(response.json())

    async with httpx.AsyncClient(limits=limits, timeout=time_cap_s) as http:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.gather(*(client(http) for _ in range(concurrency))), time_cap_s)
        except asyncio.TimeoutError:
            report.statuses["stopped by the time cap"] += 1
        report.seconds = time.perf_counter() - started
    return report
