package org.example.gl.server;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.jpa.api.dao.DaoRegistry;
import ca.uhn.fhir.jpa.api.dao.IFhirResourceDao;
import ca.uhn.fhir.jpa.searchparam.MatchUrlService;
import ca.uhn.fhir.jpa.searchparam.SearchParameterMap;
import ca.uhn.fhir.parser.IJsonLikeParser;
import ca.uhn.fhir.parser.json.jackson.JacksonStructure;
import ca.uhn.fhir.repository.IRepository;
import ca.uhn.fhir.rest.api.server.IRepositoryFactory;
import ca.uhn.fhir.rest.api.server.SystemRequestDetails;
import ca.uhn.fhir.rest.server.exceptions.ResourceGoneException;
import ca.uhn.fhir.rest.server.exceptions.ResourceNotFoundException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.DecimalNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.time.ZonedDateTime;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;
import org.cqframework.cql.cql2elm.CqlCompilerOptions;
import org.example.gl.common.CollectionBundle;
import org.example.gl.common.EngineMessages;
import org.example.gl.common.Pathways;
import org.example.gl.engine.Evaluator;
import org.example.gl.engine.Knowledge;
import org.example.gl.engine.Pathway;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.ActivityDefinition;
import org.hl7.fhir.r4.model.Attachment;
import org.hl7.fhir.r4.model.Bundle;
import org.hl7.fhir.r4.model.CarePlan;
import org.hl7.fhir.r4.model.IdType;
import org.hl7.fhir.r4.model.Library;
import org.hl7.fhir.r4.model.Medication;
import org.hl7.fhir.r4.model.MedicationAdministration;
import org.hl7.fhir.r4.model.MedicationDispense;
import org.hl7.fhir.r4.model.MedicationRequest;
import org.hl7.fhir.r4.model.MedicationStatement;
import org.hl7.fhir.r4.model.OperationOutcome;
import org.hl7.fhir.r4.model.PlanDefinition;
import org.hl7.fhir.r4.model.Reference;
import org.hl7.fhir.r4.model.RequestGroup;
import org.hl7.fhir.r4.model.Resource;
import org.hl7.fhir.r4.model.ValueSet;
import org.opencds.cqf.cql.engine.runtime.Code;
import org.opencds.cqf.fhir.cr.CrSettings;
import org.opencds.cqf.fhir.cr.plandefinition.PlanDefinitionProcessor;
import org.opencds.cqf.fhir.utility.monad.Eithers;

/**
 * The CDS services' evaluation. By default ({@code guideline.cds.evaluator: core}) through the evaluation core
 * shared with the batch evaluator ({@link #evaluate}: the request's data in memory, one warm engine per thread, the
 * stored knowledge compiled once per knowledge change). The old path, kept for the side-by-side benchmark
 * ({@code apply}): clinical-reasoning's PlanDefinition {@code $apply} processor, in-process, on each
 * recommendation PlanDefinition, with the request's data passed as {@code data} and {@code useServerData=false}
 * ({@link #apply}, read back by {@link #recommendations}). Both give cards the same input.
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
	private final CqlCompilerOptions compilerOptions;

	/**
	 * The evaluator on this server's {@code repositories} with CR's {@code crSettings}; {@code daos} and
	 * {@code matchUrls} read stored data in-process, {@code knowledge} caches PlanDefinitions; {@code fhir} and
	 * {@code mapper} parse prefetch; {@code pathwayPlanId} is the pathway PlanDefinition ordering the cards;
	 * {@code compilerOptions}: how the evaluation core compiles the stored Libraries' CQL (clinical reasoning's own,
	 * so both paths run the same ELM).
	 */
	public CdsEvaluator(
			IRepositoryFactory repositories,
			CrSettings crSettings,
			DaoRegistry daos,
			MatchUrlService matchUrls,
			KnowledgeCache knowledge,
			FhirContext fhir,
			ObjectMapper mapper,
			String pathwayPlanId,
			CqlCompilerOptions compilerOptions) {
		this.repositories = repositories;
		this.crSettings = crSettings;
		this.daos = daos;
		this.matchUrls = matchUrls;
		this.knowledge = knowledge;
		this.fhir = fhir;
		this.mapper = mapper;
		this.pathwayPlanId = pathwayPlanId;
		this.compilerOptions = compilerOptions;
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
	 * The recommendations of {@code planIds} that apply to {@code data} (from {@link #mergedData} or
	 * {@link #storedData}) for the patient, through the evaluation core: this thread's warm evaluator over the
	 * stored knowledge (compiled once per knowledge change), every condition and dynamic value in one engine call.
	 * Evaluated at the current time, with the libraries' parameter defaults (as {@code $apply} without parameters).
	 */
	public List<Pathway.Recommendation> evaluate(List<String> planIds, String patientId, Bundle data) {
		Knowledge core = knowledge.core(this::loadKnowledge);
		for (String id : planIds) {
			if (core.plan(id) == null) {
				throw new CdsRequestError(404, "PlanDefinition/" + id + " is not stored on this server; publish the package");
			}
		}
		Evaluator evaluator = core.evaluator();
		try {
			List<IBaseResource> resources = new ArrayList<>();
			for (Bundle.BundleEntryComponent e : data.getEntry()) {
				if (e.getResource() != null) {
					resources.add(e.getResource());
				}
			}
			evaluator.load(resources);
			return Pathway.recommend(evaluator, patientId, planIds,
					new Evaluator.Request(ZonedDateTime.now(), Map.of()));
		} catch (Evaluator.Failed e) {
			throw new CdsRequestError(500, "the engine reported errors evaluating " + String.join(", ", planIds) + ": "
					+ e.getMessage());
		} catch (IllegalStateException e) {
			throw new CdsRequestError(500, "the knowledge cannot be evaluated by the evaluation core: " + e.getMessage());
		} finally {
			evaluator.clear();
		}
	}

	/**
	 * The evaluation core's knowledge from this server's database: every Library's {@code text/cql} (FHIRHelpers,
	 * if not stored, is the translator's own), every ValueSet's codes (its expansion, else the codes its compose
	 * lists), every PlanDefinition and ActivityDefinition. A Library whose CQL does not compile is a 500 naming it.
	 */
	private Knowledge loadKnowledge() {
		Map<String, String> sources = new LinkedHashMap<>();
		for (IBaseResource r : all(Library.class)) {
			Library library = (Library) r;
			for (Attachment a : library.getContent()) {
				if ("text/cql".equals(a.getContentType()) && a.hasData()) {
					sources.putIfAbsent(library.hasName() ? library.getName() : library.getIdPart(),
							new String(a.getData(), StandardCharsets.UTF_8));
				}
			}
		}
		Map<String, List<Code>> valueSets = new HashMap<>();
		for (IBaseResource r : all(ValueSet.class)) {
			ValueSet vs = (ValueSet) r;
			if (vs.hasUrl()) {
				valueSets.putIfAbsent(vs.getUrl(), codes(vs));
			}
		}
		List<PlanDefinition> plans = new ArrayList<>();
		all(PlanDefinition.class).forEach(p -> plans.add((PlanDefinition) p));
		List<ActivityDefinition> activities = new ArrayList<>();
		all(ActivityDefinition.class).forEach(a -> activities.add((ActivityDefinition) a));
		try {
			return Knowledge.compile(sources.values(), compilerOptions, valueSets, plans, activities);
		} catch (IllegalStateException | IllegalArgumentException e) {
			throw new CdsRequestError(500, "the stored knowledge does not load: " + e.getMessage());
		}
	}

	private List<IBaseResource> all(Class<? extends IBaseResource> type) {
		return daos.getResourceDao(type).search(SearchParameterMap.newSynchronous(), new SystemRequestDetails())
				.getAllResources();
	}

	/** A ValueSet's codes: its expansion (nested contains included), else the concepts its compose includes. */
	private static List<Code> codes(ValueSet vs) {
		List<Code> out = new ArrayList<>();
		if (vs.hasExpansion()) {
			expansion(vs.getExpansion().getContains(), out);
		} else {
			for (ValueSet.ConceptSetComponent include : vs.getCompose().getInclude()) {
				for (ValueSet.ConceptReferenceComponent c : include.getConcept()) {
					out.add(new Code().withSystem(include.getSystem()).withCode(c.getCode()));
				}
			}
		}
		return out;
	}

	private static void expansion(List<ValueSet.ValueSetExpansionContainsComponent> contains, List<Code> out) {
		for (ValueSet.ValueSetExpansionContainsComponent c : contains) {
			if (c.hasCode()) {
				out.add(new Code().withSystem(c.getSystem()).withCode(c.getCode()));
			}
			expansion(c.getContains(), out);
		}
	}

	/**
	 * An {@code $apply} result as the evaluation core's result (the old path, {@code guideline.cds.evaluator: apply}):
	 * the RequestGroup's top-level actions (CR leaves a null where a condition was false), their texts and priority,
	 * the contained request each action generated and the ActivityDefinition behind it (read with {@code
	 * activities}, by id); empty when none applies.
	 */
	public static List<Pathway.Recommendation> recommendations(
			Applied applied, Function<String, ActivityDefinition> activities) {
		RequestGroup group = null;
		for (Resource r : applied.carePlan().getContained()) {
			if (r instanceof RequestGroup g) {
				group = g;
			}
		}
		List<Pathway.Action> actions = group == null ? List.of() : actions(applied, group.getAction(), activities);
		return actions.isEmpty() ? List.of() : List.of(new Pathway.Recommendation(applied.plan(), actions));
	}

	/** {@link #recommendations(Applied, Function)} with this server's stored ActivityDefinitions. */
	public List<Pathway.Recommendation> recommendations(Applied applied) {
		return recommendations(applied, this::readActivity);
	}

	private ActivityDefinition readActivity(String id) {
		try {
			return daos.getResourceDao(ActivityDefinition.class)
					.read(new IdType("ActivityDefinition", id), new SystemRequestDetails());
		} catch (ResourceNotFoundException | ResourceGoneException e) {
			return null;
		}
	}

	private static List<Pathway.Action> actions(
			Applied applied, List<RequestGroup.RequestGroupActionComponent> group,
			Function<String, ActivityDefinition> activities) {
		List<Pathway.Action> out = new ArrayList<>();
		for (RequestGroup.RequestGroupActionComponent a : group) {
			if (a == null) {
				continue;
			}
			Resource generated = a.hasResource() ? contained(applied.carePlan(), a.getResource().getReference()) : null;
			if (generated instanceof RequestGroup) {
				generated = null;
			}
			String ref = generated == null ? null : canonical(applied.plan().getAction(), a.getId());
			ActivityDefinition definition = ref == null || !ref.contains("ActivityDefinition/") ? null : activities.apply(
					ref.substring(ref.lastIndexOf("ActivityDefinition/") + "ActivityDefinition/".length()).split("\\|")[0]);
			out.add(new Pathway.Action(
					a.getId(),
					a.hasTitle() ? a.getTitle() : null,
					a.hasDescription() ? a.getDescription() : null,
					a.hasPriority() ? a.getPriority().toCode() : null,
					definition,
					generated,
					actions(applied, a.getAction(), activities)));
		}
		return out;
	}

	/** The definitionCanonical of the PlanDefinition action {@code id} (CR keeps it on the RequestGroup action). */
	private static String canonical(List<PlanDefinition.PlanDefinitionActionComponent> actions, String id) {
		for (PlanDefinition.PlanDefinitionActionComponent a : actions) {
			if (id != null && id.equals(a.getId()) && a.hasDefinitionCanonicalType()) {
				return a.getDefinitionCanonicalType().getValue();
			}
			String nested = canonical(a.getAction(), id);
			if (nested != null) {
				return nested;
			}
		}
		return null;
	}

	private static Resource contained(CarePlan cp, String ref) {
		if (ref == null || !ref.startsWith("#")) {
			return null;
		}
		for (Resource r : cp.getContained()) {
			if (ref.substring(1).equals(r.getIdPart())) {
				return r;
			}
		}
		return null;
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
	 *
	 * <p>The request's JSON tree goes to HAPI's parser as it is (its Jackson-backed structure), not written to a
	 * String and parsed again: the prefetch is parsed from the request once. What HAPI's own reading of that text
	 * would have changed is kept (see {@link #asWrittenDecimals}), so the engine gets the very same resources.
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
		asWrittenDecimals(bundle);
		JacksonStructure tree = new JacksonStructure();
		tree.setNativeObject(bundle);
		try {
			return ((IJsonLikeParser) fhir.newJsonParser()).parseResource(Bundle.class, tree);
		} catch (ca.uhn.fhir.parser.DataFormatException e) {
			throw new CdsRequestError(400, "prefetch is not valid FHIR R4 JSON: " + e.getMessage());
		}
	}

	/**
	 * Replaces, in place, every binary floating-point number of {@code node} with the decimal its JSON text has.
	 * The request's mapper reads a JSON decimal as a double; HAPI, reading the text the mapper writes for it, gets
	 * exactly that text as a decimal (its parser keeps decimals exact), whereas its tree structure would give a
	 * double node's text unconverted. Written text and a double node's text are the same shortest form, so the
	 * resource's values equal those of the former write-and-parse.
	 */
	static void asWrittenDecimals(JsonNode node) {
		if (node instanceof ObjectNode object) {
			for (Map.Entry<String, JsonNode> field : object.properties()) {
				JsonNode value = field.getValue();
				if (isBinaryFloat(value)) {
					field.setValue(DecimalNode.valueOf(new BigDecimal(value.asText())));
				} else if (value.isContainerNode()) {
					asWrittenDecimals(value);
				}
			}
		} else if (node instanceof ArrayNode array) {
			for (int i = 0; i < array.size(); i++) {
				JsonNode value = array.get(i);
				if (isBinaryFloat(value)) {
					array.set(i, DecimalNode.valueOf(new BigDecimal(value.asText())));
				} else if (value.isContainerNode()) {
					asWrittenDecimals(value);
				}
			}
		}
	}

	private static boolean isBinaryFloat(JsonNode value) {
		return (value.isDouble() || value.isFloat()) && Double.isFinite(value.doubleValue());
	}
}
