"""The tests behind ``contrast``: Benjamini-Hochberg FDR control and Welch's t from sums (scipy, each
checked against the hand version in tests/unit/score/test_scoring.py)."""

from __future__ import annotations

import numpy as np


def benjamini_hochberg(pvalues: np.ndarray, fdr: float) -> np.ndarray:
    """Boolean mask of the tests with Benjamini-Hochberg q-value < ``fdr`` (same shape as input).

    The q-values (BH adjusted p-values, q_(i) = min_{j >= i} p_(j) m / j) are
    ``scipy.stats.false_discovery_control``'s, computed for the p-values under ``fdr`` only: no other
    test can qualify (q >= p), and sorting only those keeps millions of tests fast.  That subset is
    exact: its c p-values are the c smallest, so their ranks among all m tests are their ranks
    among themselves, and every term p_(j) m / j with j > c is >= ``fdr`` and cannot bring a q-value
    under it; scipy computes the subset's q-values as if it were all the tests (m = c), so they are
    scaled by m / c (a q-value that scipy clips to 1 becomes m / c >= 1, which never qualifies).
    NaN p-values never qualify and count as tests (like p = 1).
    """
    from scipy import stats  # here, not at the top: only the contrast needs scipy.stats (~0.5 s to import)

    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.reshape(-1)
    m = flat.size
    out = np.zeros(m, dtype=bool)
    cand = np.flatnonzero(flat < fdr)
    if cand.size:
        q = stats.false_discovery_control(flat[cand]) * (m / cand.size)
        out[cand] = q < fdr
    return out.reshape(p.shape)


def welch_pvalue(a: np.ndarray, a2: np.ndarray, n1, b: np.ndarray, b2: np.ndarray, n2,
                 alternative: str = "greater") -> np.ndarray:
    """P-values of Welch's t-test from sums: n1 observations with sum ``a`` and sum of squares ``a2``
    against n2 with ``b`` and ``b2`` (arrays broadcast), by ``scipy.stats.ttest_ind_from_stats``
    (equal_var=False).  Where both variances are 0 scipy divides 0 by 0 for equal means: that t is
    0 (p = 0.5 one-sided, 1 two-sided); unequal means give t = +-inf (p = 0 or 1) as in scipy.
    """
    from scipy import stats  # only the contrast needs scipy.stats (see benjamini_hochberg)

    m1, m2 = a / n1, b / n2
    v1 = np.maximum(a2 - n1 * m1 * m1, 0.0) / (n1 - 1)  # rounding can make it a hair below 0
    v2 = np.maximum(b2 - n2 * m2 * m2, 0.0) / (n2 - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        result = stats.ttest_ind_from_stats(m1, np.sqrt(v1), n1, m2, np.sqrt(v2), n2, equal_var=False,
                                            alternative=alternative)
    pvalue = np.asarray(result.pvalue, dtype=np.float64)
    undefined = np.isnan(pvalue) & (m1 == m2)  # 0 / 0: equal means, no variance
    return np.where(undefined, 0.5 if alternative == "greater" else 1.0, pvalue)
