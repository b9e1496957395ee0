"""Reference privacy accounting for learning/tests/accountant.rs.

Reads a JSON request on stdin:
    {"orders": [...], "cases": [{"segments": [[q, sigma, steps], ...], "delta": d,
                                 "orders": [...] (optional, else the top-level orders),
                                 "check_order": a (optional)}, ...]}
and prints one JSON object a case, in order, on one line:
    {"dp_accounting": {"epsilon": e, "order": a}, "opacus": {"epsilon": e, "order": a},
     "quadrature": e or null}

- dp_accounting: Google's RdpAccountant, composing a PoissonSampledDpEvent(GaussianDpEvent) per segment.
- opacus: opacus/accountants/analysis/rdp.py, loaded by file path so that the package's __init__
  (which imports torch) is never run; compute_rdp summed over segments, then get_privacy_spent.
- quadrature: with check_order a, the RDP of every segment at order a from the definition,
  A_a = E_{z ~ N(0, s^2)} [((1 - q) + q exp((2z - 1) / (2 s^2)))^a], integrated by mpmath at 40 digits,
  converted to epsilon at that order with the same conversion dp_accounting uses. It depends on no
  series expansion, so it referees when the two libraries disagree.
"""

import importlib.util
import json
import logging
import math
import sys
import warnings

import mpmath
import numpy as np
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant


def load_opacus_rdp():
    spec = importlib.util.find_spec("opacus")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("opacus is not installed (pip install --no-deps opacus)")
    path = f"{spec.submodule_search_locations[0]}/accountants/analysis/rdp.py"
    module_spec = importlib.util.spec_from_file_location("opacus_rdp_analysis", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def dp_accounting_epsilon(segments, orders, delta):
    accountant = rdp_privacy_accountant.RdpAccountant(orders)
    for q, sigma, steps in segments:
        event = dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma))
        accountant.compose(event, int(steps))
    eps, order = accountant.get_epsilon_and_optimal_order(delta)
    return {"epsilon": float(eps), "order": float(order)}


def opacus_epsilon(opacus_rdp, segments, orders, delta):
    rdp = np.zeros(len(orders))
    for q, sigma, steps in segments:
        rdp += opacus_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=int(steps), orders=orders)
    eps, order = opacus_rdp.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return {"epsilon": float(eps), "order": float(order)}


def log_a_quadrature(q, sigma, order):
    """log A_order of the sampled Gaussian mechanism by numerical integration."""
    mpmath.mp.dps = 40
    if q == 1:
        return order * (order - 1) / (2 * sigma**2)
    s2 = mpmath.mpf(sigma) ** 2

    def integrand(z):
        return mpmath.npdf(z, 0, sigma) * ((1 - q) + q * mpmath.exp((2 * z - 1) / (2 * s2))) ** order

    # The mass sits near 0 (the 1 - q part) and near `order` (the exponential part's shifted peak).
    points = sorted({-mpmath.inf, -30 * sigma, 0, 0.5, 1, order / 2, order, order + 30 * sigma, mpmath.inf})
    return float(mpmath.log(mpmath.quad(integrand, points, maxdegree=10)))


def quadrature_epsilon(segments, order, delta):
    rdp = sum(steps * log_a_quadrature(q, sigma, order) / (order - 1) for q, sigma, steps in segments)
    return max(0.0, rdp + math.log1p(-1 / order) - math.log(delta * order) / (order - 1))


def main():
    warnings.simplefilter("ignore")  # opacus warns when the optimum is an extreme order
    logging.getLogger("absl").setLevel(logging.ERROR)  # dp_accounting logs non-converging orders
    request = json.load(sys.stdin)
    opacus_rdp = load_opacus_rdp()
    for case in request["cases"]:
        orders = case.get("orders", request["orders"])
        segments, delta = case["segments"], case["delta"]
        check = case.get("check_order")
        out = {
            "dp_accounting": dp_accounting_epsilon(segments, orders, delta),
            "opacus": opacus_epsilon(opacus_rdp, segments, orders, delta),
            "quadrature": None if check is None else quadrature_epsilon(segments, check, delta),
        }
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
