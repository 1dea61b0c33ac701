package org.example.gl.server;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.jpa.api.dao.DaoRegistry;
import ca.uhn.fhir.jpa.api.dao.IFhirResourceDao;
import ca.uhn.fhir.jpa.searchparam.MatchUrlService;
import ca.uhn.fhir.jpa.searchparam.SearchParameterMap;
import ca.uhn.fhir.parser.IParser;
import ca.uhn.fhir.repository.IRepository;
import ca.uhn.fhir.rest.api.server.IRepositoryFactory;
import ca.uhn.fhir.rest.api.server.SystemRequestDetails;
import ca.uhn.fhir.rest.server.exceptions.ResourceGoneException;
import ca.uhn.fhir.rest.server.exceptions.ResourceNotFoundException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.example.gl.common.CollectionBundle;
import org.example.gl.common.EngineMessages;
import org.example.gl.common.Pathways;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.Bundle;
import org.hl7.fhir.r4.model.CarePlan;
import org.hl7.fhir.r4.model.IdType;
import org.hl7.fhir.r4.model.Medication;
import org.hl7.fhir.r4.model.MedicationAdministration;
import org.hl7.fhir.r4.model.MedicationDispense;
import org.hl7.fhir.r4.model.MedicationRequest;
import org.hl7.fhir.r4.model.MedicationStatement;
import org.hl7.fhir.r4.model.OperationOutcome;
import org.hl7.fhir.r4.model.PlanDefinition;
import org.hl7.fhir.r4.model.Reference;
import org.opencds.cqf.fhir.cr.CrSettings;
import org.opencds.cqf.fhir.cr.plandefinition.PlanDefinitionProcessor;
import org.opencds.cqf.fhir.utility.monad.Eithers;

/**
 * Our own CDS evaluation path: clinical-reasoning's PlanDefinition {@code $apply} processor, in-process, on each
 * recommendation PlanDefinition, with the request's data passed as {@code data} and {@code useServerData=false}.
 *
 * <p>Why not CR's CDS service (CdsCrService): it evaluates with the prefetch as extra data <em>and</em> this server's
 * stored data, so a patient stored here under the same id as the EHR's is seen twice and cards silently vanish
 * (GLR2 did). Here the engine sees exactly one copy: the EHR's (prefetch + fhirServer reads, merged into one Bundle,
 * parsed once per call), or, when the request's fhirServer is this server, only the stored data: read once through
 * the prefetch templates in-process ({@link #storedData}) or searched by the engine ({@code useServerData=true},
 * no {@code data}). One processor per call shares the parsed data and CR's library cache
 * across the recommendations; the pathway service runs them in the order of the pathway PlanDefinition's actions.
 */
public class CdsEvaluator {
	private final IRepositoryFactory repositories;
	private final CrSettings crSettings;
	private final DaoRegistry daos;
	private final FhirContext fhir;
	private final ObjectMapper mapper;
	private final String pathwayPlanId;
	private final MatchUrlService matchUrls;
	private final KnowledgeCache knowledge;

	/**
	 * The evaluator on this server's {@code repositories} with CR's {@code crSettings}; {@code daos} and
	 * {@code matchUrls} read stored data in-process, {@code knowledge} caches PlanDefinitions; {@code fhir} and
	 * {@code mapper} parse prefetch; {@code pathwayPlanId} is the pathway PlanDefinition ordering the cards.
	 */
	public CdsEvaluator(
			IRepositoryFactory repositories,
			CrSettings crSettings,
			DaoRegistry daos,
			MatchUrlService matchUrls,
			KnowledgeCache knowledge,
			FhirContext fhir,
			ObjectMapper mapper,
			String pathwayPlanId) {
		this.repositories = repositories;
		this.crSettings = crSettings;
		this.daos = daos;
		this.matchUrls = matchUrls;
		this.knowledge = knowledge;
		this.fhir = fhir;
		this.mapper = mapper;
		this.pathwayPlanId = pathwayPlanId;
	}

	/** One recommendation's $apply result: its PlanDefinition and the CarePlan (with the contained RequestGroup). */
	public record Applied(PlanDefinition plan, CarePlan carePlan) {}

	/** The stored PlanDefinition with this id (a copy of the cached one), or null. */
	public PlanDefinition plan(String id) {
		return knowledge.plan(id, this::read);
	}

	private PlanDefinition read(String id) {
		IFhirResourceDao<PlanDefinition> dao = daos.getResourceDao(PlanDefinition.class);
		try {
			return dao.read(new IdType("PlanDefinition", id), new SystemRequestDetails());
		} catch (ResourceNotFoundException e) {
			return null;
		}
	}

	/**
	 * The recommendation PlanDefinition ids the pathway reaches, in the order of its actions (R1 ... R6), nested
	 * pathways ({@link Pathways#isPathway}: the Python tooling's rule) followed; empty when the pathway
	 * PlanDefinition is not stored.
	 */
	public List<String> pathwayPlans() {
		Set<String> out = new LinkedHashSet<>();
		PlanDefinition pathway = plan(pathwayPlanId);
		if (pathway != null) {
			collect(pathway.getAction(), out, new LinkedHashSet<>(List.of(pathwayPlanId)));
		}
		return new ArrayList<>(out);
	}

	private void collect(List<PlanDefinition.PlanDefinitionActionComponent> actions, Set<String> out, Set<String> seen) {
		for (PlanDefinition.PlanDefinitionActionComponent a : actions) {
			String ref = a.hasDefinitionCanonicalType() ? a.getDefinitionCanonicalType().getValue() : null;
			if (ref != null && ref.contains("PlanDefinition/")) {
				String id = ref.substring(ref.lastIndexOf("PlanDefinition/") + "PlanDefinition/".length()).split("\\|")[0];
				PlanDefinition nested = seen.add(id) ? plan(id) : null;
				if (Pathways.isPathway(nested)) {
					collect(nested.getAction(), out, seen); // a nested pathway: its recommendations in place
				} else if (nested != null) {
					out.add(id);
				}
			}
			collect(a.getAction(), out, seen);
		}
	}

	/**
	 * Applies each PlanDefinition for the patient to {@code data} (from {@link #mergedData} or {@link #storedData}),
	 * or, when {@code data} is null, to this server's stored data, which the engine then searches itself (one
	 * search per retrieve).
	 */
	public List<Applied> apply(List<String> planIds, String patientId, Bundle data) {
		boolean dataHere = data == null;
		// CR's processor as its factory builds it, on this server's repository with knowledge reads cached
		PlanDefinitionProcessor processor = new PlanDefinitionProcessor(
				new KnowledgeCachingRepository(repositories.create(new SystemRequestDetails()), knowledge), crSettings);
		List<Applied> out = new ArrayList<>();
		for (String id : planIds) {
			PlanDefinition plan = plan(id);
			if (plan == null) {
				throw new CdsRequestError(404, "PlanDefinition/" + id + " is not stored on this server; publish the package");
			}
			IBaseResource result = processor.apply(
					Eithers.forRight3(plan),
					"Patient/" + patientId,
					null, null, null, null, null, null, null, null,
					null,
					dataHere,
					data,
					null,
					(IRepository) null,
					(IRepository) null,
					(IRepository) null);
			if (!(result instanceof CarePlan carePlan)) {
				throw new CdsRequestError(500, "$apply of PlanDefinition/" + id + " did not return a CarePlan");
			}
			List<String> errors = EngineMessages.of(carePlan);
			if (!errors.isEmpty()) {
				throw new CdsRequestError(500, "the engine reported errors applying PlanDefinition/" + id + ": "
						+ String.join("; ", errors));
			}
			out.add(new Applied(plan, carePlan));
		}
		return out;
	}

	/**
	 * The prefetch {@code queries} (filled templates: reads {@code Type/id} and searches {@code Type?params}) run on
	 * this server's database in-process: the resources as the engine would get them from an EHR's prefetch, each
	 * once, with no HTTP and no JSON in between. For a call that evaluates several recommendations, this reads the
	 * patient once (a few searches by code) instead of each recommendation's engine searching the database for each
	 * of its retrieves. Searches run synchronously (no search cache rows written); {@code _include} is honoured.
	 * The Medications the medication resources reference are read too (the templates carry no {@code _include} in
	 * CDS Hooks 2.0's prefetch subset: {@link PrefetchResolver}); a dangling reference reads nothing, as an
	 * {@code _include} of it would.
	 */
	public Bundle storedData(Collection<String> queries) {
		Map<String, IBaseResource> byKey = new LinkedHashMap<>();
		for (String query : mergedByCode(queries)) {
			int q = query.indexOf('?');
			String type = (q < 0 ? query.substring(0, Math.max(query.indexOf('/'), 0)) : query.substring(0, q));
			if (!fhir.getResourceTypes().contains(type)) {
				throw new CdsRequestError(500, "prefetch template " + query + " does not name a FHIR resource type");
			}
			IFhirResourceDao<? extends IBaseResource> dao = daos.getResourceDao(type);
			List<IBaseResource> found;
			if (q < 0) {
				try {
					found = List.of(dao.read(new IdType(query), new SystemRequestDetails()));
				} catch (ResourceNotFoundException | ResourceGoneException e) {
					throw new CdsRequestError(412, "this server has no " + query + "; cannot evaluate without it");
				}
			} else {
				SearchParameterMap map = matchUrls.translateMatchUrl(
						query, fhir.getResourceDefinition(type), MatchUrlService.processIncludes());
				map.setLoadSynchronous(true);
				found = dao.search(map, new SystemRequestDetails()).getAllResources();
			}
			for (IBaseResource r : found) {
				if (!(r instanceof OperationOutcome)) {
					byKey.putIfAbsent(r.getIdElement().toUnqualifiedVersionless().getValue(), r);
				}
			}
		}
		IFhirResourceDao<Medication> medications = daos.getResourceDao(Medication.class);
		for (String ref : referencedMedications(byKey.values())) {
			if (!byKey.containsKey(ref)) {
				try {
					byKey.put(ref, medications.read(new IdType(ref), new SystemRequestDetails()));
				} catch (ResourceNotFoundException | ResourceGoneException e) {
					// dangling: nothing to read, as with _include; the logic still reads the reference's display
				}
			}
		}
		return CollectionBundle.of(byKey.values());
	}

	/** {@code Medication/id} of every relative medicationReference of the medication resources, each once. */
	private static Set<String> referencedMedications(Collection<IBaseResource> resources) {
		Set<String> out = new LinkedHashSet<>();
		for (IBaseResource r : resources) {
			Reference ref = null;
			if (r instanceof MedicationRequest m && m.hasMedicationReference()) {
				ref = m.getMedicationReference();
			} else if (r instanceof MedicationStatement m && m.hasMedicationReference()) {
				ref = m.getMedicationReference();
			} else if (r instanceof MedicationAdministration m && m.hasMedicationReference()) {
				ref = m.getMedicationReference();
			} else if (r instanceof MedicationDispense m && m.hasMedicationReference()) {
				ref = m.getMedicationReference();
			}
			String id = ref == null || !ref.hasReference() ? null : ref.getReferenceElement().toUnqualifiedVersionless().getValue();
			if (id != null && id.matches("Medication/[A-Za-z0-9\\-.]{1,64}")) {
				out.add(id);
			}
		}
		return out;
	}

	/**
	 * The same reads with fewer searches: searches that differ only in their {@code code} list become one search
	 * with the union of the codes (the six recommendations ask for Conditions by code in nine templates); a search
	 * of the group without a {@code code} makes the merged one code-free. A superset is safe: the engine filters
	 * what it is given by the logic's own codes. Order: first occurrence.
	 */
	static List<String> mergedByCode(Collection<String> queries) {
		Map<String, Set<String>> codesByRest = new LinkedHashMap<>(); // null set: some search had no code filter
		for (String query : queries) {
			int q = query.indexOf('?');
			if (q < 0) {
				codesByRest.putIfAbsent(query, null);
				continue;
			}
			List<String> rest = new ArrayList<>();
			Set<String> codes = null;
			boolean coded = false;
			for (String param : query.substring(q + 1).split("&")) {
				if (param.startsWith("code=") && !coded) {
					coded = true;
					codes = new LinkedHashSet<>(List.of(param.substring("code=".length()).split(",")));
				} else {
					rest.add(param);
				}
			}
			String key = query.substring(0, q) + "?" + String.join("&", rest);
			if (!codesByRest.containsKey(key)) {
				codesByRest.put(key, codes);
			} else if (codesByRest.get(key) != null) {
				if (codes == null) {
					codesByRest.put(key, null);
				} else {
					codesByRest.get(key).addAll(codes);
				}
			}
		}
		List<String> out = new ArrayList<>();
		codesByRest.forEach((rest, codes) -> out.add(codes == null ? rest : rest + "&code=" + String.join(",", codes)));
		return out;
	}

	/**
	 * All prefetched resources in one collection Bundle, each once (by type and id: a Medication reached by two
	 * searches' _include is one resource); OperationOutcomes (a search's warnings) dropped.
	 */
	public Bundle mergedData(ObjectNode prefetch) {
		Map<String, JsonNode> byKey = new LinkedHashMap<>();
		for (JsonNode value : prefetch) {
			if (value == null || !value.isObject()) {
				continue;
			}
			List<JsonNode> resources = new ArrayList<>();
			if ("Bundle".equals(value.path("resourceType").asText())) {
				value.path("entry").forEach(e -> resources.add(e.get("resource")));
			} else {
				resources.add(value);
			}
			for (JsonNode r : resources) {
				if (r == null || !r.isObject() || "OperationOutcome".equals(r.path("resourceType").asText())) {
					continue;
				}
				String key = r.path("resourceType").asText() + "/" + r.path("id").asText(String.valueOf(byKey.size()));
				byKey.putIfAbsent(key, r);
			}
		}
		ObjectNode bundle = CollectionBundle.ofJson(mapper, byKey.values());
		IParser parser = fhir.newJsonParser();
		try {
			return parser.parseResource(Bundle.class, mapper.writeValueAsString(bundle));
		} catch (IOException | ca.uhn.fhir.parser.DataFormatException e) {
			throw new CdsRequestError(400, "prefetch is not valid FHIR R4 JSON: " + e.getMessage());
		}
	}
}
