package org.example.gl.server;

import com.nimbusds.jose.JOSEException;
import com.nimbusds.jose.JWSAlgorithm;
import com.nimbusds.jose.JWSHeader;
import com.nimbusds.jose.crypto.ECDSASigner;
import com.nimbusds.jose.jwk.Curve;
import com.nimbusds.jose.jwk.ECKey;
import com.nimbusds.jose.jwk.JWKSet;
import com.nimbusds.jose.jwk.gen.ECKeyGenerator;
import com.nimbusds.jwt.JWTClaimsSet;
import com.nimbusds.jwt.SignedJWT;
import java.io.IOException;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Clock;
import java.time.Instant;
import java.time.ZoneOffset;
import java.util.Date;
import java.util.UUID;

/**
 * Keys, a trusted-issuers file and token makers for the JWT tests, at a fixed clock. k1 is the issuer's key (its JWKS
 * file), k2 is trusted by nobody, k3 would be served at the allowed jku (never fetched: the tests stop before).
 */
final class JwtFixture {
	static final String ISS = "https://ehr.test.example";
	static final String JKU_ONLY_ISS = "https://jku-only.test.example";
	static final String ALLOWED_JKU = "https://ehr.test.example/allowed.json";
	static final String SERVICE_URL = "http://127.0.0.1:8080/cds-services/gl-treatment";
	static final long NOW = 1_780_000_000L;
	static final Clock CLOCK = Clock.fixed(Instant.ofEpochSecond(NOW), ZoneOffset.UTC);

	final ECKey k1;
	final ECKey k2;
	final ECKey k3;
	final Path issuersFile;

	JwtFixture(Path dir) throws JOSEException, IOException {
		k1 = new ECKeyGenerator(Curve.P_384).keyID("k1").generate();
		k2 = new ECKeyGenerator(Curve.P_384).keyID("k1").generate(); // same kid as k1: only the signature tells
		k3 = new ECKeyGenerator(Curve.P_384).keyID("k3").generate();
		Files.writeString(dir.resolve("k1.json"), new JWKSet(k1.toPublicJWK()).toString());
		issuersFile = dir.resolve("issuers.json");
		Files.writeString(issuersFile, "{\"issuers\": ["
				+ "{\"iss\": \"" + ISS + "\", \"jwks\": \"k1.json\", \"jku\": [\"" + ALLOWED_JKU + "\"]},"
				+ "{\"iss\": \"" + JKU_ONLY_ISS + "\", \"jku\": [\"" + ALLOWED_JKU + "\"]}]}");
	}

	TrustedIssuers issuers() {
		return TrustedIssuers.load(issuersFile);
	}

	/** A verifier at the fixed clock, 60 s skew, 300 s lifetime, with a replay cache of {@code replayMax}. */
	CdsJwtVerifier verifier(int replayMax) {
		return new CdsJwtVerifier(issuers(), new ReplayCache(replayMax), 60, 300, CLOCK);
	}

	/** Claims that pass for {@link #SERVICE_URL}: iat now, exp in 240 s, a fresh jti. */
	static JWTClaimsSet.Builder claims() {
		return new JWTClaimsSet.Builder()
				.issuer(ISS)
				.subject(ISS)
				.audience(SERVICE_URL)
				.issueTime(new Date(NOW * 1000))
				.expirationTime(new Date((NOW + 240) * 1000))
				.jwtID(UUID.randomUUID().toString());
	}

	/** {@code claims} signed ES384 with {@code key}, its kid in the header, and {@code jku} there when given. */
	static String sign(ECKey key, JWTClaimsSet claims, String jku) throws JOSEException {
		JWSHeader.Builder header = new JWSHeader.Builder(JWSAlgorithm.ES384).keyID(key.getKeyID());
		if (jku != null) {
			header.jwkURL(URI.create(jku));
		}
		SignedJWT jwt = new SignedJWT(header.build(), claims);
		jwt.sign(new ECDSASigner(key));
		return jwt.serialize();
	}
}
