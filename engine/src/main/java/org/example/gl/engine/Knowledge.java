package org.example.gl.engine;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.cqframework.cql.cql2elm.CqlCompilerException;
import org.cqframework.cql.cql2elm.CqlCompilerOptions;
import org.cqframework.cql.cql2elm.LibraryBuilder;
import org.cqframework.cql.cql2elm.LibraryManager;
import org.cqframework.cql.cql2elm.ModelManager;
import org.cqframework.cql.cql2elm.StringLibrarySourceProvider;
import org.cqframework.cql.cql2elm.quick.FhirLibrarySourceProvider;
import org.hl7.elm.r1.VersionedIdentifier;
import org.hl7.fhir.r4.model.ActivityDefinition;
import org.hl7.fhir.r4.model.PlanDefinition;
import org.opencds.cqf.cql.engine.runtime.Code;

/**
 * The package as the evaluation core needs it, loaded once and then only read (by any number of threads): every
 * CQL library compiled by the Java translator of the engine's own release, the value sets' codes, and the
 * PlanDefinitions and ActivityDefinitions the walk turns into recommendations and draft resources.
 *
 * <p>The CQL is compiled from source, not read from the shipped ELM: the engine refuses ELM written by another
 * translator release (see docs/notes on the batch evaluator), and compiling from source is also what clinical
 * reasoning's {@code $apply} does with a Library's {@code text/cql}, so both paths run the same ELM.
 */
public final class Knowledge {
	private final LibraryManager libraries;
	private final List<String> libraryNames;
	/** value set URL -> "system|code" members. */
	private final Map<String, Set<String>> members;
	/** value set URL -> codes, in expansion order. */
	private final Map<String, List<Code>> expansions;
	private final Map<String, PlanDefinition> plans;
	private final Map<String, ActivityDefinition> activities;
	/** One warm evaluator per thread over this knowledge (a new knowledge: new evaluators). */
	private final ThreadLocal<Evaluator> evaluators = ThreadLocal.withInitial(() -> new Evaluator(this));

	private Knowledge(
			LibraryManager libraries,
			List<String> libraryNames,
			Map<String, List<Code>> expansions,
			Map<String, PlanDefinition> plans,
			Map<String, ActivityDefinition> activities) {
		this.libraries = libraries;
		this.libraryNames = List.copyOf(libraryNames);
		this.expansions = expansions;
		this.members = new HashMap<>();
		expansions.forEach((url, codes) -> {
			Set<String> m = new HashSet<>();
			codes.forEach(c -> m.add(c.getSystem() + "|" + c.getCode()));
			members.put(url, m);
		});
		this.plans = plans;
		this.activities = activities;
	}

	/**
	 * Compiles {@code cqlSources} (each a whole library; FHIRHelpers may be among them, else the translator's
	 * embedded copy is used) with {@code options}, every library once: a CQL error stops the load with the library's
	 * name and the message, not the first patient. {@code valueSets}: URL -> codes; the PlanDefinitions and
	 * ActivityDefinitions are indexed by logical id (and ActivityDefinitions also by canonical url).
	 */
	public static Knowledge compile(
			Collection<String> cqlSources,
			CqlCompilerOptions options,
			Map<String, List<Code>> valueSets,
			Collection<PlanDefinition> planDefinitions,
			Collection<ActivityDefinition> activityDefinitions) {
		LibraryManager manager = new LibraryManager(new ModelManager(), options);
		List<String> sources = new ArrayList<>(cqlSources);
		manager.getLibrarySourceLoader().registerProvider(new StringLibrarySourceProvider(sources));
		manager.getLibrarySourceLoader().registerProvider(new FhirLibrarySourceProvider());
		List<String> names = new ArrayList<>();
		for (String source : sources) {
			names.add(libraryName(source));
		}
		for (String name : names) {
			List<CqlCompilerException> errors = new ArrayList<>();
			manager.resolveLibrary(new VersionedIdentifier().withId(name), errors);
			for (CqlCompilerException e : errors) {
				if (e.getSeverity() == CqlCompilerException.ErrorSeverity.Error) {
					throw new IllegalStateException("CQL library " + name + ": " + e.getMessage());
				}
			}
		}
		Map<String, PlanDefinition> plans = new LinkedHashMap<>();
		for (PlanDefinition p : planDefinitions) {
			plans.put(p.getIdElement().getIdPart(), p);
		}
		Map<String, ActivityDefinition> activities = new HashMap<>();
		for (ActivityDefinition a : activityDefinitions) {
			activities.put(a.getIdElement().getIdPart(), a);
			if (a.hasUrl()) {
				activities.put(a.getUrl(), a);
			}
		}
		return new Knowledge(manager, names, new HashMap<>(valueSets), plans, activities);
	}

	private static final Pattern LIBRARY = Pattern.compile("(?m)^\\s*library\\s+(\"[^\"]+\"|[A-Za-z_][A-Za-z0-9_]*)");

	/** The library identifier a CQL source declares ({@code library Name version '...'}), or a located error. */
	static String libraryName(String source) {
		Matcher m = LIBRARY.matcher(source);
		if (!m.find()) {
			String head = source.strip();
			throw new IllegalArgumentException("a CQL source without a library declaration: "
					+ head.substring(0, Math.min(60, head.length())));
		}
		return m.group(1).replace("\"", "");
	}

	/**
	 * The translator options as the project's configuration writes them ({@code [cql] options} in guideline.toml:
	 * {"options": [...], "signatureLevel", "compatibilityLevel", "analyzeDataRequirements"}).
	 */
	public static CqlCompilerOptions compilerOptions(JsonNode config) {
		CqlCompilerOptions options = new CqlCompilerOptions();
		List<CqlCompilerOptions.Options> set = new ArrayList<>();
		for (JsonNode o : config.path("options")) {
			set.add(CqlCompilerOptions.Options.valueOf(o.asText()));
		}
		options.setOptions(set.toArray(new CqlCompilerOptions.Options[0]));
		if (config.has("signatureLevel")) {
			options.setSignatureLevel(LibraryBuilder.SignatureLevel.valueOf(config.get("signatureLevel").asText()));
		}
		if (config.has("compatibilityLevel")) {
			options.setCompatibilityLevel(config.get("compatibilityLevel").asText());
		}
		options.setAnalyzeDataRequirements(config.path("analyzeDataRequirements").asBoolean(false));
		return options;
	}

	/**
	 * Value sets as the Python tooling writes them ({@code {url: {version: [{system, code}, ...]}}}): URL -> codes,
	 * each code once.
	 */
	public static Map<String, List<Code>> valueSets(JsonNode byUrl) {
		Map<String, List<Code>> out = new HashMap<>();
		byUrl.properties().forEach(vs -> {
			Set<String> seen = new HashSet<>();
			List<Code> codes = out.computeIfAbsent(vs.getKey(), k -> new ArrayList<>());
			vs.getValue().properties().forEach(version -> {
				for (JsonNode c : version.getValue()) {
					String system = c.get("system").asText();
					String code = c.get("code").asText();
					if (seen.add(system + "|" + code)) {
						codes.add(new Code().withSystem(system).withCode(code));
					}
				}
			});
		});
		return out;
	}

	/**
	 * This thread's evaluator over this knowledge, created on the thread's first call and kept warm after it. Load
	 * the call's data into it and {@link Evaluator#clear} it when done.
	 */
	public Evaluator evaluator() {
		return evaluators.get();
	}

	/** The shared library manager: its cache holds every compiled library, so threads only read it. */
	LibraryManager libraryManager() {
		return libraries;
	}

	/** The names of the libraries compiled from the given sources, in their order. */
	public List<String> libraryNames() {
		return libraryNames;
	}

	/** True when {@code system|code} is in the value set {@code url}; an unknown value set is an error. */
	boolean inValueSet(String url, String system, String code) {
		Set<String> m = members.get(url);
		if (m == null) {
			throw new IllegalArgumentException("unknown value set " + url);
		}
		return m.contains(system + "|" + code);
	}

	/** True when the value set {@code url} is known and holds {@code system|code} (the retrieve's filter). */
	boolean memberOf(String url, String system, String code) {
		Set<String> m = members.get(url);
		return m != null && m.contains(system + "|" + code);
	}

	/** The codes of the value set {@code url}; an unknown value set is an error. */
	List<Code> expansion(String url) {
		List<Code> codes = expansions.get(url);
		if (codes == null) {
			throw new IllegalArgumentException("unknown value set " + url);
		}
		return codes;
	}

	/** The PlanDefinition with this logical id, or null. Read only: never change what it returns. */
	public PlanDefinition plan(String id) {
		return plans.get(id);
	}

	/**
	 * The PlanDefinition a {@code definitionCanonical} names: its canonical url, or a reference ending in
	 * {@code PlanDefinition/<id>} (a {@code |version} is ignored), or null.
	 */
	public PlanDefinition planFor(String canonical) {
		if (canonical == null) {
			return null;
		}
		String ref = canonical.split("\\|")[0];
		for (PlanDefinition p : plans.values()) {
			if (ref.equals(p.getUrl())) {
				return p;
			}
		}
		int at = ref.lastIndexOf("PlanDefinition/");
		return at < 0 ? null : plans.get(ref.substring(at + "PlanDefinition/".length()));
	}

	/** Every PlanDefinition, by logical id, in load order. */
	public Map<String, PlanDefinition> plans() {
		return Collections.unmodifiableMap(plans);
	}

	/**
	 * The ActivityDefinition a {@code definitionCanonical} names: its canonical url, or a reference ending in
	 * {@code ActivityDefinition/<id>} (a {@code |version} is ignored), or null.
	 */
	public ActivityDefinition activity(String canonical) {
		if (canonical == null) {
			return null;
		}
		String ref = canonical.split("\\|")[0];
		ActivityDefinition byUrl = activities.get(ref);
		if (byUrl != null) {
			return byUrl;
		}
		int at = ref.lastIndexOf("ActivityDefinition/");
		return at < 0 ? null : activities.get(ref.substring(at + "ActivityDefinition/".length()));
	}
}
