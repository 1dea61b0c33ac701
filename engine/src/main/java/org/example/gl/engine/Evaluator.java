package org.example.gl.engine;

import java.time.ZonedDateTime;
import java.util.ArrayList;
import java.util.Collection;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import kotlin.Pair;
import org.hl7.elm.r1.VersionedIdentifier;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.CodeableConcept;
import org.hl7.fhir.r4.model.Coding;
import org.hl7.fhir.r4.model.Resource;
import org.opencds.cqf.cql.engine.data.CompositeDataProvider;
import org.opencds.cqf.cql.engine.execution.CqlEngine;
import org.opencds.cqf.cql.engine.execution.Environment;
import org.opencds.cqf.cql.engine.execution.EvaluationExpressionRef;
import org.opencds.cqf.cql.engine.execution.EvaluationParams;
import org.opencds.cqf.cql.engine.execution.EvaluationResult;
import org.opencds.cqf.cql.engine.execution.EvaluationResults;
import org.opencds.cqf.cql.engine.fhir.model.R4FhirModelResolver;
import org.opencds.cqf.cql.engine.retrieve.RetrieveProvider;
import org.opencds.cqf.cql.engine.runtime.Code;
import org.opencds.cqf.cql.engine.runtime.Interval;
import org.opencds.cqf.cql.engine.terminology.CodeSystemInfo;
import org.opencds.cqf.cql.engine.terminology.TerminologyProvider;
import org.opencds.cqf.cql.engine.terminology.ValueSetInfo;

/**
 * One thread's warm CQL environment over a {@link Knowledge}: the compiled libraries are shared, the environment
 * (model resolver, data and terminology providers) is built once, and each evaluation is one engine call over
 * every library and define it needs, so the libraries they include are evaluated once per patient. Not
 * thread-safe: keep one per thread ({@link ThreadLocal}).
 *
 * <p>Data: the resources of one patient, held in memory by type; a retrieve filters them by the code path's codes
 * or value-set membership (the expansions in the knowledge). No server, no search parameters, no JSON.
 */
public final class Evaluator implements RetrieveProvider, TerminologyProvider {
	private static final String FHIR = "http://hl7.org/fhir";

	/**
	 * What a caller gives an evaluation besides the data: the evaluation time (the engine's Now(), Today()) and the
	 * CQL parameters by name (for example "Evaluation Time", "Measurement Period"); values are CQL runtime values.
	 */
	public record Request(ZonedDateTime evaluationTime, Map<String, Object> parameters) {
		/** A request at {@code evaluationTime} with {@code parameters} (copied; null values are not allowed). */
		public Request {
			parameters = Map.copyOf(parameters);
		}
	}

	/** The engine failed on this patient: the first error it reported, with the define's context when known. */
	public static final class Failed extends Exception {
		Failed(String message) {
			super(message, null, false, false);
		}
	}

	private final Knowledge knowledge;
	private final R4FhirModelResolver resolver = new R4FhirModelResolver();
	private final Environment environment;
	private Map<String, List<Object>> byType = Map.of();
	private String patientId;

	/** Nanoseconds spent in the engine on this thread (for profiles). */
	public long evalNanos;

	/** A warm environment over {@code knowledge}. */
	public Evaluator(Knowledge knowledge) {
		this.knowledge = knowledge;
		this.environment = new Environment(
				knowledge.libraryManager(), Map.of(FHIR, new CompositeDataProvider(resolver, this)), this);
	}

	/** The knowledge this evaluator runs. */
	public Knowledge knowledge() {
		return knowledge;
	}

	/**
	 * Makes {@code resources} (one patient's) the data of the next evaluations; returns the Patient's id (null
	 * without a Patient). Replaces what was loaded before.
	 */
	public String load(Collection<? extends IBaseResource> resources) {
		String patient = null;
		Map<String, List<Object>> types = new HashMap<>();
		for (IBaseResource r : resources) {
			String type = ((Resource) r).fhirType();
			types.computeIfAbsent(type, k -> new ArrayList<>()).add(r);
			if (type.equals("Patient") && patient == null) {
				patient = r.getIdElement().getIdPart();
			}
		}
		byType = types;
		patientId = patient;
		return patient;
	}

	/** Forgets the loaded data (so a pooled thread holds no patient between calls). */
	public void clear() {
		byType = Map.of();
		patientId = null;
	}

	/** The Patient id of the loaded data, or null. */
	public String patientId() {
		return patientId;
	}

	/**
	 * Evaluates the defines {@code expressions} names (library -> defines) of the libraries in {@code libraries},
	 * in one engine call, for the Patient {@code contextPatient} of the loaded data. Values: define -> its CQL
	 * value, per library.
	 */
	public Map<String, Map<String, Object>> evaluate(
			String contextPatient, Collection<String> libraries, Map<String, ? extends Collection<String>> expressions,
			Request request) throws Failed {
		long t = System.nanoTime();
		try {
			EvaluationResults results = new CqlEngine(environment, EnumSet.of(CqlEngine.Options.EnableExpressionCaching))
					.evaluate(params(contextPatient, libraries, expressions, request));
			if (results.hasExceptions()) {
				RuntimeException e = results.getExceptions().values().iterator().next();
				throw new Failed(String.valueOf(e.getMessage()));
			}
			Map<String, Map<String, Object>> out = new LinkedHashMap<>();
			for (Map.Entry<VersionedIdentifier, EvaluationResult> r : results.getResults().entrySet()) {
				Map<String, Object> values = new HashMap<>();
				Collection<String> defines = expressions.get(r.getKey().getId());
				for (String d : defines == null ? List.<String>of() : defines) {
					values.put(d, r.getValue().get(d) == null ? null : r.getValue().get(d).getValue());
				}
				out.put(r.getKey().getId(), values);
			}
			return out;
		} catch (Failed e) {
			throw e;
		} catch (RuntimeException e) {
			throw new Failed(e.getClass().getSimpleName() + ": " + e.getMessage());
		} finally {
			evalNanos += System.nanoTime() - t;
		}
	}

	/**
	 * The engine's parameters for one evaluation: the libraries and their defines, the Patient context, the CQL
	 * parameters and the evaluation time. The one place they are filled, for every caller.
	 */
	static EvaluationParams params(
			String contextPatient, Collection<String> libraries, Map<String, ? extends Collection<String>> expressions,
			Request request) {
		EvaluationParams.Builder params = new EvaluationParams.Builder();
		for (String lib : libraries) {
			List<EvaluationExpressionRef> refs = new ArrayList<>();
			Collection<String> defines = expressions.get(lib);
			for (String d : defines == null ? List.<String>of() : defines) {
				refs.add(new EvaluationExpressionRef(d));
			}
			params.library(new VersionedIdentifier().withId(lib), new EvaluationParams.LibraryParams(refs));
		}
		params.setContextParameter(new Pair<>("Patient", contextPatient));
		params.setParameters(request.parameters());
		params.setEvaluationDateTime(request.evaluationTime());
		return params.build();
	}

	@Override
	public Iterable<Object> retrieve(
			String context,
			String contextPath,
			Object contextValue,
			String dataType,
			String templateId,
			String codePath,
			Iterable<Code> codes,
			String valueSet,
			String datePath,
			String dateLowPath,
			String dateHighPath,
			Interval dateRange) {
		List<Object> all = byType.getOrDefault(dataType, List.of());
		if (codePath == null || (codes == null && valueSet == null)) {
			return all;
		}
		List<Object> out = new ArrayList<>();
		for (Object r : all) {
			if (matches(resolver.resolvePath(r, codePath), codes, valueSet)) {
				out.add(r);
			}
		}
		return out;
	}

	private boolean matches(Object value, Iterable<Code> codes, String valueSet) {
		List<Coding> codings = new ArrayList<>();
		collect(value, codings);
		for (Coding c : codings) {
			if (valueSet != null && knowledge.memberOf(valueSet, c.getSystem(), c.getCode())) {
				return true;
			}
			if (codes != null) {
				for (Code want : codes) {
					if (want.getCode() != null && want.getCode().equals(c.getCode()) && eq(want.getSystem(), c.getSystem())) {
						return true;
					}
				}
			}
		}
		return false;
	}

	private static boolean eq(String a, String b) {
		return a == null ? b == null : a.equals(b);
	}

	private static void collect(Object value, List<Coding> out) {
		if (value instanceof CodeableConcept cc) {
			out.addAll(cc.getCoding());
		} else if (value instanceof Coding c) {
			out.add(c);
		} else if (value instanceof Iterable<?> it) {
			for (Object o : it) {
				collect(o, out);
			}
		}
	}

	@Override
	public boolean in(Code code, ValueSetInfo valueSet) {
		return knowledge.inValueSet(valueSet.getId(), code.getSystem(), code.getCode());
	}

	@Override
	public Iterable<Code> expand(ValueSetInfo valueSet) {
		return knowledge.expansion(valueSet.getId());
	}

	@Override
	public Code lookup(Code code, CodeSystemInfo codeSystem) {
		return code;
	}
}
