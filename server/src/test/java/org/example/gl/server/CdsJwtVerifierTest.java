package org.example.gl.server;

import static org.example.gl.server.JwtFixture.ISS;
import static org.example.gl.server.JwtFixture.NOW;
import static org.example.gl.server.JwtFixture.SERVICE_URL;
import static org.example.gl.server.JwtFixture.claims;
import static org.example.gl.server.JwtFixture.sign;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.nimbusds.jose.EncryptionMethod;
import com.nimbusds.jose.JWEAlgorithm;
import com.nimbusds.jose.JWEHeader;
import com.nimbusds.jose.JWSAlgorithm;
import com.nimbusds.jose.JWSHeader;
import com.nimbusds.jose.JWSObject;
import com.nimbusds.jose.Payload;
import com.nimbusds.jose.crypto.ECDSASigner;
import com.nimbusds.jose.crypto.MACSigner;
import com.nimbusds.jose.crypto.RSAEncrypter;
import com.nimbusds.jose.crypto.RSASSASigner;
import com.nimbusds.jose.jwk.JWKSet;
import com.nimbusds.jose.jwk.RSAKey;
import com.nimbusds.jose.jwk.gen.RSAKeyGenerator;
import com.nimbusds.jwt.EncryptedJWT;
import com.nimbusds.jwt.JWTClaimsSet;
import com.nimbusds.jwt.PlainJWT;
import com.nimbusds.jwt.SignedJWT;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Date;
import java.util.List;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Every reason CdsJwtVerifier refuses a token for (the unit-level counterpart of the HTTP smoke test
 * tests/integration/test_cds_jwt.py), and the token that passes.
 */
class CdsJwtVerifierTest {
	@TempDir
	Path dir;

	private JwtFixture f;
	private CdsJwtVerifier verifier;

	@BeforeEach
	void setUp() throws Exception {
		f = new JwtFixture(dir);
		verifier = f.verifier(1000);
	}

	private String reason(String token) {
		return assertThrows(CdsJwtVerifier.Rejected.class, () -> verifier.verify(token, List.of(SERVICE_URL))).getMessage();
	}

	private String reason(JWTClaimsSet claims) throws Exception {
		return reason(sign(f.k1, claims, null));
	}

	private static Date at(long epochSecond) {
		return new Date(epochSecond * 1000);
	}

	/** Verify that a good token passes and its claims come back. */
	@Test
	void goodTokenPasses() throws Exception {
		JWTClaimsSet claims = claims().build();
		assertEquals(claims.getJWTID(), verifier.verify(sign(f.k1, claims, null), List.of(SERVICE_URL)).getJWTID());
	}

	/** Verify that any of the call's URLs is a good aud (the feedback URL is accepted besides the service's). */
	@Test
	void anyOfTheAudiencesPasses() throws Exception {
		String feedback = SERVICE_URL + "/feedback";
		String token = sign(f.k1, claims().audience(feedback).build(), null);
		verifier.verify(token, List.of(SERVICE_URL, feedback));
	}

	/** Verify that text that is not a JWT is refused as such. */
	@Test
	void notAJwt() {
		assertTrue(reason("abc.def").contains("not a JWT"));
	}

	/** Verify that an unsigned token (alg none) is refused. */
	@Test
	void unsigned() {
		assertTrue(reason(new PlainJWT(claims().build()).serialize()).contains("not signed"));
	}

	/** Verify that an encrypted (JWE) token is refused: only a signature proves who sent it. */
	@Test
	void encrypted() throws Exception {
		RSAKey rsa = new RSAKeyGenerator(2048).generate();
		EncryptedJWT jwe = new EncryptedJWT(new JWEHeader(JWEAlgorithm.RSA_OAEP_256, EncryptionMethod.A128GCM), claims().build());
		jwe.encrypt(new RSAEncrypter(rsa));
		assertTrue(reason(jwe.serialize()).contains("not signed"));
	}

	/** Verify that HS256 is refused: a public key would do as its shared secret. */
	@Test
	void symmetricAlgorithm() throws Exception {
		SignedJWT hs = new SignedJWT(new JWSHeader.Builder(JWSAlgorithm.HS256).keyID("k1").build(), claims().build());
		hs.sign(new MACSigner(new byte[32]));
		assertTrue(reason(hs.serialize()).contains("HS256 is not accepted"));
	}

	/** Verify that a signed payload that is not a JSON object is refused before any key is tried. */
	@Test
	void claimsNotAnObject() throws Exception {
		JWSObject jws = new JWSObject(new JWSHeader.Builder(JWSAlgorithm.ES384).keyID("k1").build(), new Payload("[1, 2]"));
		jws.sign(new ECDSASigner(f.k1));
		assertTrue(reason(jws.serialize()).contains("claims are not a JSON object"));
	}

	/** Verify that an issuer not in the file is refused, and its (attacker-chosen) name is clipped in the message. */
	@Test
	void unknownIssuer() throws Exception {
		String r = reason(claims().issuer("https://other.example/" + "x".repeat(200) + "\u0000").build());
		assertTrue(r.contains("not a trusted issuer"), r);
		assertTrue(r.length() < 160 && !r.contains("\u0000"), r);
	}

	/** Verify that a token with no iss at all is an unknown issuer. */
	@Test
	void noIssuer() throws Exception {
		assertTrue(reason(claims().issuer(null).build()).contains("not a trusted issuer"));
	}

	/** Verify that a jku that is not on the issuer's allow-list is refused without fetching it. */
	@Test
	void jkuNotAllowed() throws Exception {
		String token = sign(f.k3, claims().build(), "https://ehr.test.example/other.json");
		assertTrue(reason(token).contains("not on the allow-list"));
	}

	/** Verify that an issuer trusted by jku only needs its tokens to name a jku. */
	@Test
	void jkuOnlyIssuerWithoutJku() throws Exception {
		String r = reason(claims().issuer(JwtFixture.JKU_ONLY_ISS).build());
		assertTrue(r.contains("has no key file"), r);
	}

	/** Verify that a token signed with another key (same kid) does not verify. */
	@Test
	void wrongKey() throws Exception {
		assertTrue(reason(sign(f.k2, claims().build(), null)).contains("signature does not verify"));
	}

	/** Verify that an RSA key under 2048 bits is never used, even when the issuer lists it and it signed the token. */
	@Test
	void weakRsaKeyIsNotUsed() throws Exception {
		RSAKey weak = new RSAKeyGenerator(1024, true).keyID("weak").generate();
		Files.writeString(dir.resolve("k1.json"), new JWKSet(weak.toPublicJWK()).toString());
		verifier = f.verifier(1000);
		SignedJWT rs = new SignedJWT(new JWSHeader.Builder(JWSAlgorithm.RS256).keyID("weak").build(), claims().build());
		rs.sign(new RSASSASigner(weak.toPrivateKey(), true));
		assertTrue(reason(rs.serialize()).contains("signature does not verify"));
	}

	/** Verify that exp and iat are both required. */
	@Test
	void missingTimes() throws Exception {
		assertTrue(reason(claims().expirationTime(null).build()).contains("needs exp and iat"));
		assertTrue(reason(claims().issueTime(null).build()).contains("needs exp and iat"));
	}

	/** Verify that an expired token is refused, but not within the allowed clock skew. */
	@Test
	void expired() throws Exception {
		assertTrue(reason(claims().issueTime(at(NOW - 900)).expirationTime(at(NOW - 61)).build()).contains("has expired"));
		verifier.verify(sign(f.k1, claims().issueTime(at(NOW - 900)).expirationTime(at(NOW - 60)).build(), null),
				List.of(SERVICE_URL));
	}

	/** Verify that exp more than the maximum lifetime (+ skew) ahead is refused. */
	@Test
	void lifetimeTooLong() throws Exception {
		String r = reason(claims().expirationTime(at(NOW + 300 + 61)).build());
		assertTrue(r.contains("300 s ahead"), r);
	}

	/** Verify that iat in the future (beyond the skew) is refused. */
	@Test
	void issuedInTheFuture() throws Exception {
		assertTrue(reason(claims().issueTime(at(NOW + 61)).build()).contains("iat is in the future"));
	}

	/** Verify that an aud naming another service (or none) is refused, naming the expected URL. */
	@Test
	void wrongAudience() throws Exception {
		String r = reason(claims().audience(SERVICE_URL.replace("gl-treatment", "gl-rec-1")).build());
		assertTrue(r.contains("aud is not this service's URL (" + SERVICE_URL + ")"), r);
		assertTrue(reason(claims().audience(List.of()).build()).contains("aud is not"));
	}

	/** Verify that jti is required, not blank and at most 256 characters. */
	@Test
	void jti() throws Exception {
		assertTrue(reason(claims().jwtID(null).build()).contains("needs a jti"));
		assertTrue(reason(claims().jwtID(" ").build()).contains("needs a jti"));
		assertTrue(reason(claims().jwtID("j".repeat(257)).build()).contains("needs a jti"));
	}

	/** Verify that a token is accepted once: the second use is a replay. */
	@Test
	void replay() throws Exception {
		String token = sign(f.k1, claims().build(), null);
		verifier.verify(token, List.of(SERVICE_URL));
		assertTrue(reason(token).contains("replayed"));
	}

	/** Verify that a full replay cache refuses new tokens (fail closed) rather than forgetting live ones. */
	@Test
	void replayCacheFull() throws Exception {
		verifier = f.verifier(1);
		verifier.verify(sign(f.k1, claims().build(), null), List.of(SERVICE_URL));
		assertTrue(reason(claims().build()).contains("too many recent tokens"));
	}

	/** Verify that an invalid token never enters the replay cache (junk cannot fill it). */
	@Test
	void invalidTokensAreNotRemembered() throws Exception {
		verifier = f.verifier(1);
		reason(claims().audience("https://elsewhere.example").build());
		verifier.verify(sign(f.k1, claims().build(), null), List.of(SERVICE_URL));
	}

	/** Verify that log values are clipped to printable ASCII and 80 characters. */
	@Test
	void clip() {
		assertEquals("", CdsJwtVerifier.clip(null));
		assertEquals("a?b", CdsJwtVerifier.clip("a\nb"));
		assertEquals("x".repeat(80) + "...", CdsJwtVerifier.clip("x".repeat(81)));
		assertFalse(CdsJwtVerifier.clip("\u00e9").contains("\u00e9"));
	}

	/** Verify the fixture: the issuer is the one the tokens name. */
	@Test
	void fixtureIssuer() {
		assertTrue(f.issuers().get(ISS) != null);
	}
}
