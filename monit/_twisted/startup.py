"""Every check of ``monit._twisted`` run at once, when the service is made."""

from __future__ import annotations

from monit._twisted import early_disconnect, head_counts, key_sharing, quiet_logs, trust_root
from monit._twisted.seam import Seam, fits

# The fast paths' checks (tcp_buffer, takeover) are not here: the streams run them when they start, and choose how they write.
SEAMS: list[Seam] = [head_counts, key_sharing, quiet_logs, early_disconnect, trust_root]


def check_all() -> None:
    """Check every seam against the installed Twisted: a warning for each misfit, Unfit for one monit cannot run with."""
    for seam in SEAMS:
        fits(seam)
