"""Claim verification: the Verifier seam (base), proof links, the X API sweep, handle proofs, anti-abuse.

Deliberately empty of imports: RaidService imports `abuse` on its claim path, and the runner imports
RaidService, so importing the package must not pull either in.
"""
