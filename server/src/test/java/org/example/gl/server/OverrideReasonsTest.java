package org.example.gl.server;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.hl7.fhir.r4.model.CodeSystem;
import org.junit.jupiter.api.Test;

/** Override reasons from the stored CodeSystem, and the documented fallback. */
class OverrideReasonsTest {
	private static final String SYSTEM = "http://example.org/fhir/gl" + OverrideReasons.SYSTEM_PATH;
	private final Map<String, CodeSystem> stored = new HashMap<>();
	private final OverrideReasons reasons = new OverrideReasons(stored::get);

	/** Verify that nested concepts count (depth first) and a missing display shows the code. */
	@Test
	void conceptsDepthFirst() {
		CodeSystem cs = new CodeSystem().setUrl(SYSTEM);
		CodeSystem.ConceptDefinitionComponent parent = cs.addConcept().setCode("a").setDisplay("A");
		parent.addConcept().setCode("a1");
		cs.addConcept().setCode("b").setDisplay("B");
		stored.put(SYSTEM, cs);
		assertEquals(List.of(new OverrideReasons.Reason("a", "A"), new OverrideReasons.Reason("a1", "a1"),
				new OverrideReasons.Reason("b", "B")), reasons.forSystem(SYSTEM));
	}

	/** Verify that a missing CodeSystem, or one without concepts, falls back to the built-in reasons. */
	@Test
	void fallback() {
		assertEquals(OverrideReasons.FALLBACK, reasons.forSystem(SYSTEM));
		stored.put(SYSTEM, new CodeSystem().setUrl(SYSTEM));
		assertEquals(OverrideReasons.FALLBACK, reasons.forSystem(SYSTEM));
	}

	/** Verify that the fallback is what the package's CodeSystem file holds today, so falling back changes nothing. */
	@Test
	void fallbackMatchesThePackage() throws Exception {
		java.nio.file.Path file = java.nio.file.Path.of("..", "fhir_resources", "codesystem", "codesystem-gl-cds-override-reason.json");
		CodeSystem cs = ca.uhn.fhir.context.FhirContext.forR4Cached().newJsonParser()
				.parseResource(CodeSystem.class, java.nio.file.Files.readString(file));
		stored.put(SYSTEM, cs);
		assertEquals(OverrideReasons.FALLBACK, reasons.forSystem(SYSTEM));
	}

	/** Verify that a package's reasons are offered under its own system url. */
	@Test
	void forPackage() {
		OverrideReasons.Offered offered = reasons.forPackage("http://example.org/fhir/gl");
		assertEquals(SYSTEM, offered.system());
		assertEquals(OverrideReasons.FALLBACK, offered.reasons());
	}
}
