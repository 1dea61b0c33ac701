package org.example.gl.server;

import com.nimbusds.jose.JOSEException;
import com.nimbusds.jose.JWSAlgorithm;
import com.nimbusds.jose.JWSHeader;
import com.nimbusds.jose.JWSVerifier;
import com.nimbusds.jose.crypto.ECDSAVerifier;
import com.nimbusds.jose.crypto.RSASSAVerifier;
import com.nimbusds.jose.jwk.ECKey;
import com.nimbusds.jose.jwk.JWK;
import com.nimbusds.jose.jwk.JWKMatcher;
import com.nimbusds.jose.jwk.JWKSelector;
import com.nimbusds.jose.jwk.JWKSet;
import com.nimbusds.jose.jwk.RSAKey;
import com.nimbusds.jwt.JWT;
import com.nimbusds.jwt.JWTClaimsSet;
import com.nimbusds.jwt.JWTParser;
import com.nimbusds.jwt.SignedJWT;
import java.text.ParseException;
import java.time.Clock;
import java.util.Date;
import java.util.List;
import java.util.Set;

/**
 * Checks the JWT a CDS client sends (CDS Hooks 2.0 "Trusting CDS Clients"), with Nimbus JOSE+JWT doing the
 * parsing and signature crypto. A token passes when: it is a JWS (never {@code alg: none}, never encrypted) with an
 * allow-listed asymmetric algorithm; {@code iss} is a trusted issuer; the signature verifies with one of that
 * issuer's keys (its JWKS file, or the key set at the header's {@code jku} when that URL is on the issuer's
 * allow-list); {@code aud} names the service URL; {@code exp} is not past and at most {@code maxLifetime} ahead and
 * {@code iat} is not in the future (both with {@code skew}); {@code jti} was not seen before from that issuer.
 * The order matters: the replay cache is written only for otherwise valid tokens, so junk cannot fill it.
 */
final class CdsJwtVerifier {
	/** A token that must not pass, with a short reason for the 401 (never the token itself). */
	static final class Rejected extends Exception {
		Rejected(String reason) {
			super(reason);
		}
	}

	/** RS/PS need an RSA key, ES an EC key: no HS* (a public key would be usable as an HMAC secret). */
	static final Set<JWSAlgorithm> ALGORITHMS = Set.of(
			JWSAlgorithm.ES256, JWSAlgorithm.ES384, JWSAlgorithm.ES512,
			JWSAlgorithm.RS256, JWSAlgorithm.RS384, JWSAlgorithm.RS512,
			JWSAlgorithm.PS256, JWSAlgorithm.PS384, JWSAlgorithm.PS512);
	private static final int MIN_RSA_BITS = 2048;
	private static final int MAX_JTI = 256;

	private final TrustedIssuers issuers;
	private final ReplayCache replays;
	private final long skewSeconds;
	private final long maxLifetimeSeconds;
	private final Clock clock;

	CdsJwtVerifier(TrustedIssuers issuers, ReplayCache replays, long skewSeconds, long maxLifetimeSeconds, Clock clock) {
		this.issuers = issuers;
		this.replays = replays;
		this.skewSeconds = skewSeconds;
		this.maxLifetimeSeconds = maxLifetimeSeconds;
		this.clock = clock;
	}

	/** The claims of a token that passes every check for a call whose URL is one of {@code audiences}. */
	JWTClaimsSet verify(String token, List<String> audiences) throws Rejected {
		JWT jwt;
		try {
			jwt = JWTParser.parse(token);
		} catch (ParseException e) {
			throw new Rejected("the bearer token is not a JWT");
		}
		if (!(jwt instanceof SignedJWT signed)) {
			throw new Rejected("the JWT is not signed (alg none or encrypted); sign it with ES384 or RS384");
		}
		JWSHeader header = signed.getHeader();
		if (!ALGORITHMS.contains(header.getAlgorithm())) {
			throw new Rejected("JWT algorithm " + header.getAlgorithm() + " is not accepted; use ES384 or RS384");
		}
		JWTClaimsSet claims;
		try {
			claims = signed.getJWTClaimsSet();
		} catch (ParseException e) {
			throw new Rejected("the JWT claims are not a JSON object");
		}
		TrustedIssuers.Issuer issuer = issuers.get(claims.getIssuer());
		if (issuer == null) {
			throw new Rejected("iss '" + clip(claims.getIssuer()) + "' is not a trusted issuer");
		}
		checkSignature(signed, issuer);
		checkClaims(claims, audiences);
		long exp = claims.getExpirationTime().toInstant().getEpochSecond();
		if (!replays.firstUse(issuer.iss() + "\n" + claims.getJWTID(), exp + skewSeconds, clock.instant().getEpochSecond())) {
			throw new Rejected("jti was already used (replayed token)");
		}
		return claims;
	}

	private void checkSignature(SignedJWT jwt, TrustedIssuers.Issuer issuer) throws Rejected {
		JWSHeader header = jwt.getHeader();
		if (header.getJWKURL() != null) {
			String jku = header.getJWKURL().toString();
			if (!issuer.jku().contains(jku)) {
				throw new Rejected("jku is not on the allow-list of issuer '" + clip(issuer.iss()) + "'");
			}
			if (verifiesWithAny(jwt, issuers.jku(jku, false)) || verifiesWithAny(jwt, issuers.jku(jku, true))) {
				return;
			}
		} else if (issuer.keys() != null && verifiesWithAny(jwt, issuer.keys())) {
			return;
		} else if (issuer.keys() == null) {
			throw new Rejected("issuer '" + clip(issuer.iss()) + "' has no key file; its tokens must name an allowed jku");
		}
		throw new Rejected("the JWT signature does not verify with issuer '" + clip(issuer.iss()) + "' keys");
	}

	private static boolean verifiesWithAny(SignedJWT jwt, JWKSet keys) throws Rejected {
		// kid (when given), key type and use/alg must fit the header
		List<JWK> candidates = new JWKSelector(JWKMatcher.forJWSHeader(jwt.getHeader())).select(keys);
		for (JWK key : candidates) {
			try {
				JWSVerifier verifier;
				if (key instanceof ECKey ec) {
					verifier = new ECDSAVerifier(ec.toECPublicKey());
				} else if (key instanceof RSAKey rsa && rsa.size() >= MIN_RSA_BITS) {
					verifier = new RSASSAVerifier(rsa.toRSAPublicKey());
				} else {
					continue;
				}
				if (jwt.verify(verifier)) {
					return true;
				}
			} catch (JOSEException e) {
				// a key that cannot verify this algorithm (e.g. EC curve mismatch): try the next
			}
		}
		return false;
	}

	private void checkClaims(JWTClaimsSet claims, List<String> audiences) throws Rejected {
		long now = clock.instant().getEpochSecond();
		Date exp = claims.getExpirationTime();
		Date iat = claims.getIssueTime();
		if (exp == null || iat == null) {
			throw new Rejected("the JWT needs exp and iat");
		}
		if (exp.toInstant().getEpochSecond() + skewSeconds < now) {
			throw new Rejected("the JWT has expired");
		}
		if (exp.toInstant().getEpochSecond() > now + maxLifetimeSeconds + skewSeconds) {
			throw new Rejected("the JWT's exp is more than " + maxLifetimeSeconds + " s ahead");
		}
		if (iat.toInstant().getEpochSecond() > now + skewSeconds) {
			throw new Rejected("the JWT's iat is in the future");
		}
		List<String> aud = claims.getAudience();
		if (aud == null || aud.stream().noneMatch(audiences::contains)) {
			throw new Rejected("aud is not this service's URL (" + audiences.get(0) + ")");
		}
		String jti = claims.getJWTID();
		if (jti == null || jti.isBlank() || jti.length() > MAX_JTI) {
			throw new Rejected("the JWT needs a jti (a unique id, at most " + MAX_JTI + " characters)");
		}
	}

	/** An attacker-chosen value for a log line or message: printable ASCII only, at most 80 characters. */
	static String clip(String value) {
		if (value == null) {
			return "";
		}
		String s = value.replaceAll("[^\\x20-\\x7e]", "?");
		return s.length() > 80 ? s.substring(0, 80) + "..." : s;
	}
}
