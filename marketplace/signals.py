"""What the Marketplace announces to the apps above it, which it never imports (DESIGN §1)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent once per ``TrustChange`` after the commit that recorded it, with ``change`` (the row, image selected):
# an image's decision turned from allowed to denied. Receivers run inside the delivery's transaction and must be
# idempotent per change (a delivery that fails is repeated).
image_trust_lost = Signal()
