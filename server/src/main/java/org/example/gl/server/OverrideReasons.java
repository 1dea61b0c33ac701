package org.example.gl.server;

import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Function;
import org.hl7.fhir.r4.model.CodeSystem;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The reasons a clinician may give for dismissing a card: the concepts of the package's override-reason CodeSystem
 * ({@code fhir_resources/codesystem}, canonical {@code <package canonical>/CodeSystem/gl-cds-override-reason}) as
 * stored on this server, so the cards offer, and feedback accepts, exactly what the published package says.
 *
 * <p>When that CodeSystem is not stored (knowledge published without it, or an older package) or has no concepts,
 * the cards fall back to {@link #FALLBACK}, the three reasons the package has always shipped, and say so in the log
 * (a warning, once per system URL until it is stored): cards keep working, and the log tells the publisher what is
 * missing. The stored CodeSystem is read through {@link KnowledgeCache} (see {@code ClinicalReasoningConfig}), so a
 * republished one is seen on the first call after the knowledge changed, on every node.
 */
public class OverrideReasons {
	private static final Logger ourLog = LoggerFactory.getLogger(OverrideReasons.class);

	/** The package's code system of override reasons, relative to its canonical base. */
	public static final String SYSTEM_PATH = "/CodeSystem/gl-cds-override-reason";

	/** One reason: its code and what the card shows. */
	public record Reason(String code, String display) {}

	/** What the package's CodeSystem holds today; offered only when the stored one cannot be read. */
	public static final List<Reason> FALLBACK = List.of(
			new Reason("already-addressed", "Already addressed"),
			new Reason("patient-declined", "Patient declined"),
			new Reason("not-clinically-appropriate", "Not clinically appropriate for this patient"));

	private final Function<String, CodeSystem> stored;
	private final Set<String> warned = ConcurrentHashMap.newKeySet();

	/** {@code stored}: the stored CodeSystem with a canonical url, or null when there is none. */
	public OverrideReasons(Function<String, CodeSystem> stored) {
		this.stored = stored;
	}

	/** The reasons of the code system {@code system} (its canonical url), in the CodeSystem's order. */
	public List<Reason> forSystem(String system) {
		CodeSystem cs = stored.apply(system);
		List<Reason> out = new ArrayList<>();
		if (cs != null) {
			collect(cs.getConcept(), out);
		}
		if (out.isEmpty()) {
			if (warned.add(system)) {
				ourLog.warn("CDS cards: no CodeSystem {} with concepts is stored; offering the built-in override "
						+ "reasons {} (publish the package's CodeSystem to use its own)", system,
						FALLBACK.stream().map(Reason::code).toList());
			}
			return FALLBACK;
		}
		warned.remove(system);
		return out;
	}

	/** The reasons a card offers: the code system's canonical url and its reasons. */
	public record Offered(String system, List<Reason> reasons) {}

	/** The reasons of the package whose canonical base is {@code canonicalBase}. */
	public Offered forPackage(String canonicalBase) {
		String system = canonicalBase + SYSTEM_PATH;
		return new Offered(system, forSystem(system));
	}

	/** Concepts depth first (a hierarchy's codes are all codes). */
	private static void collect(List<CodeSystem.ConceptDefinitionComponent> concepts, List<Reason> out) {
		for (CodeSystem.ConceptDefinitionComponent c : concepts) {
			if (c.hasCode()) {
				out.add(new Reason(c.getCode(), c.hasDisplay() ? c.getDisplay() : c.getCode()));
			}
			collect(c.getConcept(), out);
		}
	}
}
