"""A Raspberry Pi estimate: a fixed pure-Python workload with a published Pi 4 figure (docs/performance.md).

The workload is the Computer Language Benchmarks Game's n-body, the classic pure-Python program (no
numpy). A Pi 4 Model B at 1.5 GHz (performance governor) was published at 158.3 s for 5,000,000 steps.
This runs ``STEPS`` steps (default 200,000), best CPU time of 3, and prints the time scaled to 5,000,000
steps and the ratio to the Pi 4 figure: multiply the gateway's CPU figures by it for a Pi 4 estimate.

    PYTHONPATH=. .venv/bin/python -m bench.pi_estimate [STEPS]
"""

from __future__ import annotations

import sys
import time
from itertools import combinations
from typing import TYPE_CHECKING

PI4_SECONDS = 158.3
"""Published: n-body, 5,000,000 steps, Python, Raspberry Pi 4 Model B, 1.5 GHz, performance governor."""
PI4_STEPS = 5_000_000

SOLAR_MASS = 4 * 3.14159265358979323 * 3.14159265358979323
DAYS_PER_YEAR = 365.24

if TYPE_CHECKING:  # runs on older interpreters too (the published figure's Python was probably 3.7)
    Body = tuple[list[float], list[float], float]


def bodies() -> list[Body]:
    d = DAYS_PER_YEAR
    return [
        ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], SOLAR_MASS),
        ([4.84143144246472090e+00, -1.16032004402742839e+00, -1.03622044471123109e-01],
         [1.66007664274403694e-03 * d, 7.69901118419740425e-03 * d, -6.90460016972063023e-05 * d],
         9.54791938424326609e-04 * SOLAR_MASS),
        ([8.34336671824457987e+00, 4.12479856412430479e+00, -4.03523417114321381e-01],
         [-2.76742510726862411e-03 * d, 4.99852801234917238e-03 * d, 2.30417297573763929e-05 * d],
         2.85885980666130812e-04 * SOLAR_MASS),
        ([1.28943695621391310e+01, -1.51111514016986312e+01, -2.23307578892655734e-01],
         [2.96460137564761618e-03 * d, 2.37847173959480950e-03 * d, -2.96589568540237556e-05 * d],
         4.36624404335156298e-05 * SOLAR_MASS),
        ([1.53796971148509165e+01, -2.59193146099879641e+01, 1.79258772950371181e-01],
         [2.68067772490389322e-03 * d, 1.62824170038242295e-03 * d, -9.51592254519715870e-05 * d],
         5.15138902046611451e-05 * SOLAR_MASS),
    ]


def advance(dt: float, steps: int, system: list[Body]) -> None:
    pairs = list(combinations(system, 2))
    for _ in range(steps):
        for ([x1, y1, z1], v1, m1), ([x2, y2, z2], v2, m2) in pairs:
            dx = x1 - x2
            dy = y1 - y2
            dz = z1 - z2
            mag = dt * ((dx * dx + dy * dy + dz * dz) ** (-1.5))
            b1m = m1 * mag
            b2m = m2 * mag
            v1[0] -= dx * b2m
            v1[1] -= dy * b2m
            v1[2] -= dz * b2m
            v2[0] += dx * b1m
            v2[1] += dy * b1m
            v2[2] += dz * b1m
        for r, [vx, vy, vz], _m in system:
            r[0] += dt * vx
            r[1] += dt * vy
            r[2] += dt * vz


def energy(system: list[Body]) -> float:
    e = 0.0
    for ((x1, y1, z1), _v1, m1), ((x2, y2, z2), _v2, m2) in combinations(system, 2):
        e -= (m1 * m2) / ((x1 - x2) ** 2 + (y1 - y2) ** 2 + (z1 - z2) ** 2) ** 0.5
    for _r, [vx, vy, vz], m in system:
        e += m * (vx * vx + vy * vy + vz * vz) / 2.0
    return e


def offset_momentum(system: list[Body]) -> None:
    px = py = pz = 0.0
    for _r, [vx, vy, vz], m in system:
        px -= vx * m
        py -= vy * m
        pz -= vz * m
    _r, v, m = system[0]
    v[0], v[1], v[2] = px / m, py / m, pz / m


def one_run(steps: int) -> float:
    system = bodies()
    offset_momentum(system)
    start = time.process_time()
    advance(0.01, steps, system)
    return time.process_time() - start


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    system = bodies()
    offset_momentum(system)
    print(f"energy {energy(system):.9f} (the benchmark's reference: -0.169075164)")
    best = min(one_run(steps) for _ in range(3))
    scaled = best * PI4_STEPS / steps
    print(f"{steps} steps: {best:.3f} s CPU; 5,000,000 steps: {scaled:.1f} s here, {PI4_SECONDS} s on a Pi 4: "
          f"{PI4_SECONDS / scaled:.1f}x (Python {sys.version.split()[0]} here; the published run's version is not "
          f"stated, probably 3.7: run this under the same version for the CPU ratio)")


if __name__ == "__main__":
    main()
