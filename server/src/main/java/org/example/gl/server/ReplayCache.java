package org.example.gl.server;

import java.util.HashMap;
import java.util.Map;

/**
 * The {@code jti}s of accepted CDS Hooks JWTs until they expire, so a captured token cannot be replayed. Memory is
 * bounded: an entry lives only until its token's {@code exp} (+ skew; at most ~5 minutes), expired entries are
 * dropped when the map is full, and if it is still full the token is refused (fail closed: at the default bound of
 * 100 000 that is over 300 calls/s sustained for 5 minutes).
 */
final class ReplayCache {
	private final int max;
	private final Map<String, Long> expiresAt = new HashMap<>();

	ReplayCache(int max) {
		this.max = max;
	}

	/**
	 * True the first time {@code key} is seen (and remembered until {@code expiresAtSec}); false for a replay.
	 *
	 * @throws CdsJwtVerifier.Rejected when the cache is full of live entries
	 */
	synchronized boolean firstUse(String key, long expiresAtSec, long nowSec) throws CdsJwtVerifier.Rejected {
		Long seen = expiresAt.get(key);
		if (seen != null && seen >= nowSec) {
			return false;
		}
		if (expiresAt.size() >= max) {
			expiresAt.values().removeIf(t -> t < nowSec);
			if (expiresAt.size() >= max) {
				throw new CdsJwtVerifier.Rejected("too many recent tokens to check for replay; retry shortly");
			}
		}
		expiresAt.put(key, expiresAtSec);
		return true;
	}

	/** How many token ids are remembered now. */
	synchronized int size() {
		return expiresAt.size();
	}
}
