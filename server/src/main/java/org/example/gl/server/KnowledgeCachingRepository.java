package org.example.gl.server;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.model.api.IQueryParameterType;
import ca.uhn.fhir.repository.IRepository;
import ca.uhn.fhir.repository.impl.MultiMapRepositoryRestQueryBuilder;
import ca.uhn.fhir.rest.api.MethodOutcome;
import com.google.common.collect.Multimap;
import com.google.common.collect.Multimaps;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.function.Supplier;
import org.hl7.fhir.instance.model.api.IBaseBundle;
import org.hl7.fhir.instance.model.api.IBaseConformance;
import org.hl7.fhir.instance.model.api.IBaseParameters;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.instance.model.api.IIdType;
import org.hl7.fhir.r4.model.Resource;

/**
 * The repository clinical reasoning's PlanDefinition processor uses for a CDS call: this server's, with reads and
 * searches of knowledge resources ({@link #CACHED_TYPES}, all in {@link KnowledgeFreshnessFilter}'s fingerprint) answered from
 * {@link KnowledgeCache} after the first time. Patient data and every write go straight through. A cached answer is
 * exactly the one the same request got from the database (same type, same parameters, same headers), so the
 * evaluation cannot tell the difference except in time.
 */
final class KnowledgeCachingRepository implements IRepository {
	/** Must stay within the fingerprint's types: only those empty the cache when they change. */
	static final Set<String> CACHED_TYPES = Set.of("Library", "ValueSet", "PlanDefinition", "ActivityDefinition");

	private final IRepository inner;
	private final KnowledgeCache cache;

	KnowledgeCachingRepository(IRepository inner, KnowledgeCache cache) {
		this.inner = inner;
		this.cache = cache;
	}

	private boolean cached(Class<? extends IBaseResource> type) {
		return CACHED_TYPES.contains(inner.fhirContext().getResourceType(type));
	}

	@SuppressWarnings("unchecked")
	private <R extends IBaseResource> R through(String key, Supplier<R> load) {
		return (R) cache.resource(key, () -> (Resource) load.get());
	}

	/** One text per distinct search: parameters sorted by name, each value as it would appear in a URL. */
	private String key(Class<? extends IBaseResource> type, Multimap<String, List<IQueryParameterType>> params, Map<String, String> headers) {
		FhirContext fhir = inner.fhirContext();
		Map<String, List<String>> sorted = new TreeMap<>();
		params.forEach((name, ors) -> {
			List<String> values = new ArrayList<>();
			for (IQueryParameterType p : ors) {
				String qualifier = p.getQueryParameterQualifier();
				values.add((qualifier == null ? "" : qualifier) + "=" + p.getValueAsQueryToken(fhir));
			}
			sorted.computeIfAbsent(name, n -> new ArrayList<>()).add(String.join(",", values));
		});
		return "search " + fhir.getResourceType(type) + " " + sorted + " " + new TreeMap<>(headers == null ? Map.of() : headers);
	}

	@Override
	public <T extends IBaseResource, I extends IIdType> T read(Class<T> type, I id, Map<String, String> headers) {
		if (!cached(type)) {
			return inner.read(type, id, headers);
		}
		String key = "read " + id.toUnqualified().getValue() + " " + new TreeMap<>(headers == null ? Map.of() : headers);
		return through(key, () -> inner.read(type, id, headers));
	}

	@Override
	public <B extends IBaseBundle, T extends IBaseResource> B search(
			Class<B> bundleType, Class<T> type, Multimap<String, List<IQueryParameterType>> params, Map<String, String> headers) {
		if (!cached(type)) {
			return inner.search(bundleType, type, params, headers);
		}
		return through(key(type, params, headers), () -> inner.search(bundleType, type, params, headers));
	}

	@Override
	public <B extends IBaseBundle, T extends IBaseResource> B search(
			Class<B> bundleType, Class<T> type, Map<String, List<IQueryParameterType>> params, Map<String, String> headers) {
		if (!cached(type)) {
			return inner.search(bundleType, type, params, headers);
		}
		return through(key(type, Multimaps.forMap(params), headers), () -> inner.search(bundleType, type, params, headers));
	}

	@Override
	public <B extends IBaseBundle, T extends IBaseResource> B search(
			Class<B> bundleType, Class<T> type, IRepositoryRestQueryContributor query, Map<String, String> headers) {
		if (!cached(type)) {
			return inner.search(bundleType, type, query, headers);
		}
		Multimap<String, List<IQueryParameterType>> params = MultiMapRepositoryRestQueryBuilder.contributorToMultimap(query);
		return through(key(type, params, headers), () -> inner.search(bundleType, type, query, headers));
	}

	// Everything else: straight through.

	@Override
	public <T extends IBaseResource> MethodOutcome create(T resource, Map<String, String> headers) {
		return inner.create(resource, headers);
	}

	@Override
	public <T extends IBaseResource> MethodOutcome update(T resource, Map<String, String> headers) {
		return inner.update(resource, headers);
	}

	@Override
	public <T extends IBaseResource, I extends IIdType> MethodOutcome delete(Class<T> type, I id, Map<String, String> headers) {
		return inner.delete(type, id, headers);
	}

	@Override
	public <I extends IIdType, P extends IBaseParameters> MethodOutcome patch(I id, P patch, Map<String, String> headers) {
		return inner.patch(id, patch, headers);
	}

	@Override
	public <B extends IBaseBundle> B link(Class<B> bundleType, String url, Map<String, String> headers) {
		return inner.link(bundleType, url, headers);
	}

	@Override
	public <C extends IBaseConformance> C capabilities(Class<C> type, Map<String, String> headers) {
		return inner.capabilities(type, headers);
	}

	@Override
	public <B extends IBaseBundle> B transaction(B bundle, Map<String, String> headers) {
		return inner.transaction(bundle, headers);
	}

	@Override
	public <R extends IBaseResource, P extends IBaseParameters> R invoke(
			String name, P parameters, Class<R> returnType, Map<String, String> headers) {
		return inner.invoke(name, parameters, returnType, headers);
	}

	@Override
	public <P extends IBaseParameters> MethodOutcome invoke(String name, P parameters, Map<String, String> headers) {
		return inner.invoke(name, parameters, headers);
	}

	@Override
	public <R extends IBaseResource, P extends IBaseParameters, T extends IBaseResource> R invoke(
			Class<T> type, String name, P parameters, Class<R> returnType, Map<String, String> headers) {
		return inner.invoke(type, name, parameters, returnType, headers);
	}

	@Override
	public <P extends IBaseParameters, T extends IBaseResource> MethodOutcome invoke(
			Class<T> type, String name, P parameters, Map<String, String> headers) {
		return inner.invoke(type, name, parameters, headers);
	}

	@Override
	public <R extends IBaseResource, P extends IBaseParameters, I extends IIdType> R invoke(
			I id, String name, P parameters, Class<R> returnType, Map<String, String> headers) {
		return inner.invoke(id, name, parameters, returnType, headers);
	}

	@Override
	public <P extends IBaseParameters, I extends IIdType> MethodOutcome invoke(
			I id, String name, P parameters, Map<String, String> headers) {
		return inner.invoke(id, name, parameters, headers);
	}

	@Override
	public <B extends IBaseBundle, P extends IBaseParameters> B history(P parameters, Class<B> returnType, Map<String, String> headers) {
		return inner.history(parameters, returnType, headers);
	}

	@Override
	public <B extends IBaseBundle, P extends IBaseParameters, T extends IBaseResource> B history(
			Class<T> type, P parameters, Class<B> returnType, Map<String, String> headers) {
		return inner.history(type, parameters, returnType, headers);
	}

	@Override
	public <B extends IBaseBundle, P extends IBaseParameters, I extends IIdType> B history(
			I id, P parameters, Class<B> returnType, Map<String, String> headers) {
		return inner.history(id, parameters, returnType, headers);
	}

	@Override
	public FhirContext fhirContext() {
		return inner.fhirContext();
	}
}
