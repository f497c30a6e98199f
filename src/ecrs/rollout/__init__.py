"""Roll out, canary, promote and roll back exported versions without dropping requests."""
