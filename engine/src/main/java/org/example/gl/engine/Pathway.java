package org.example.gl.engine;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.example.gl.common.Pathways;
import org.hl7.fhir.r4.model.ActivityDefinition;
import org.hl7.fhir.r4.model.Expression;
import org.hl7.fhir.r4.model.PlanDefinition;
import org.hl7.fhir.r4.model.PlanDefinition.PlanDefinitionActionComponent;
import org.hl7.fhir.r4.model.Resource;

/**
 * The walk of recommendation PlanDefinitions for one patient, with the semantics of clinical reasoning's
 * PlanDefinition {@code $apply}: an action applies when each of its applicability conditions is true (null or
 * false: it does not); a top-level action's {@code action.title} / {@code action.description} dynamic values
 * replace its texts; a sub-action that applies and names an ActivityDefinition yields that activity's draft
 * resource ({@link Activities}). Every condition and dynamic value of every plan is evaluated in one engine call
 * (the libraries' shared includes once), which is where the cost of {@code $apply} (an engine per expression) goes.
 */
public final class Pathway {
	private Pathway() {}

	/** A recommendation that applies: its PlanDefinition and the top-level actions that apply, in order. */
	public record Recommendation(PlanDefinition plan, List<Action> actions) {}

	/**
	 * An action that applies: its id, texts (dynamic values applied), priority code (or null), the
	 * ActivityDefinition it names (or null), that activity's draft resource (or null), and its sub-actions that apply.
	 */
	public record Action(
			String id,
			String title,
			String description,
			String priority,
			ActivityDefinition definition,
			Resource resource,
			List<Action> actions) {}

	/**
	 * The recommendations of {@code planIds} that apply to the data {@code evaluator} holds, in that order (a plan
	 * none of whose top-level actions applies is left out). An unknown plan id is an error naming it.
	 */
	public static List<Recommendation> recommend(Evaluator evaluator, List<String> planIds, Evaluator.Request request)
			throws Evaluator.Failed {
		String patient = evaluator.patientId();
		if (patient == null) {
			throw new IllegalArgumentException("the data holds no Patient");
		}
		return recommend(evaluator, patient, planIds, request);
	}

	/**
	 * As {@link #recommend(Evaluator, List, Evaluator.Request)} for the Patient {@code patient} (the CQL context
	 * and the drafts' subject), whether or not the data holds that Patient resource (as {@code $apply}'s subject).
	 */
	public static List<Recommendation> recommend(
			Evaluator evaluator, String patient, List<String> planIds, Evaluator.Request request)
			throws Evaluator.Failed {
		Knowledge knowledge = evaluator.knowledge();
		List<PlanDefinition> plans = new ArrayList<>();
		Map<String, Set<String>> expressions = new LinkedHashMap<>();
		for (String id : planIds) {
			PlanDefinition plan = knowledge.plan(id);
			if (plan == null) {
				throw new IllegalArgumentException("PlanDefinition/" + id + " is not in the loaded knowledge");
			}
			plans.add(plan);
			collect(plan.getAction(), expressions.computeIfAbsent(library(plan), k -> new LinkedHashSet<>()));
		}
		Map<String, Map<String, Object>> values = expressions.isEmpty()
				? Map.of()
				: evaluator.evaluate(patient, expressions.keySet(), expressions, request);
		List<Recommendation> out = new ArrayList<>();
		for (PlanDefinition plan : plans) {
			Map<String, Object> lib = values.getOrDefault(library(plan), Map.of());
			List<Action> actions = new ArrayList<>();
			for (PlanDefinitionActionComponent a : plan.getAction()) {
				Action fired = action(a, lib, knowledge, patient);
				if (fired != null) {
					actions.add(fired);
				}
			}
			if (!actions.isEmpty()) {
				out.add(new Recommendation(plan, actions));
			}
		}
		return out;
	}

	/**
	 * The walk of the package's pathways (PlanDefinitions of type clinical-protocol, by id), as Python's
	 * {@code guideline/evaluation/walk.py}: first the pathways' own conditions (one engine call; most patients of a
	 * registry stop here), then every recommendation an applicable pathway action reaches (nested pathways
	 * followed), each once, in pathway order, through {@link #recommend}.
	 */
	public static List<Recommendation> walk(Evaluator evaluator, Evaluator.Request request) throws Evaluator.Failed {
		Knowledge knowledge = evaluator.knowledge();
		List<PlanDefinition> pathways = knowledge.plans().values().stream()
				.filter(Pathways::isPathway)
				.sorted(Comparator.comparing(p -> p.getIdElement().getIdPart()))
				.toList();
		Map<String, Set<String>> gate = new LinkedHashMap<>();
		for (PlanDefinition p : pathways) {
			gateExpressions(p.getAction(), p, gate);
		}
		String patient = evaluator.patientId();
		if (patient == null) {
			throw new IllegalArgumentException("the data holds no Patient");
		}
		Map<String, Map<String, Object>> values = gate.isEmpty()
				? Map.of()
				: evaluator.evaluate(patient, gate.keySet(), gate, request);
		Set<String> reached = new LinkedHashSet<>();
		for (PlanDefinition p : pathways) {
			reach(p, p.getAction(), values, knowledge, reached, new LinkedHashSet<>(List.of(p.getIdElement().getIdPart())));
		}
		return reached.isEmpty() ? List.of() : recommend(evaluator, new ArrayList<>(reached), request);
	}

	/** The conditions of a pathway's own actions, and of the pathways nested in it, by library. */
	private static void gateExpressions(
			List<PlanDefinitionActionComponent> actions, PlanDefinition pathway, Map<String, Set<String>> into) {
		for (PlanDefinitionActionComponent a : actions) {
			for (PlanDefinition.PlanDefinitionActionConditionComponent c : a.getCondition()) {
				if (c.getKind() == PlanDefinition.ActionConditionKind.APPLICABILITY && c.hasExpression()) {
					into.computeIfAbsent(library(pathway), k -> new LinkedHashSet<>()).add(define(c.getExpression()));
				}
			}
			gateExpressions(a.getAction(), pathway, into);
		}
	}

	private static void reach(
			PlanDefinition pathway,
			List<PlanDefinitionActionComponent> actions,
			Map<String, Map<String, Object>> values,
			Knowledge knowledge,
			Set<String> reached,
			Set<String> seen) {
		Map<String, Object> lib = values.getOrDefault(library(pathway), Map.of());
		for (PlanDefinitionActionComponent a : actions) {
			if (!applies(a, lib)) {
				continue;
			}
			String ref = a.hasDefinitionCanonicalType() ? a.getDefinitionCanonicalType().getValue() : null;
			if (ref != null && ref.contains("PlanDefinition/")) {
				PlanDefinition target = knowledge.planFor(ref);
				if (target == null) {
					throw new IllegalStateException("PlanDefinition/" + pathway.getIdElement().getIdPart() + " action "
							+ a.getId() + ": " + ref + " is not in the loaded knowledge");
				}
				String id = target.getIdElement().getIdPart();
				if (Pathways.isPathway(target)) {
					if (!seen.add(id)) {
						throw new IllegalStateException("PlanDefinition/" + pathway.getIdElement().getIdPart() + " action "
								+ a.getId() + ": " + ref + " leads back into a pathway already walked");
					}
					reach(target, target.getAction(), values, knowledge, reached, seen);
				} else {
					reached.add(id);
				}
			}
			reach(pathway, a.getAction(), values, knowledge, reached, seen);
		}
	}

	private static boolean applies(PlanDefinitionActionComponent a, Map<String, Object> values) {
		for (PlanDefinition.PlanDefinitionActionConditionComponent c : a.getCondition()) {
			if (c.getKind() == PlanDefinition.ActionConditionKind.APPLICABILITY && c.hasExpression()
					&& !Boolean.TRUE.equals(values.get(define(c.getExpression())))) {
				return false;
			}
		}
		return true;
	}

	/** The CQL library a plan's expressions are in: its first {@code library}, by name (the canonical's last part). */
	static String library(PlanDefinition plan) {
		if (!plan.hasLibrary()) {
			return null;
		}
		String ref = plan.getLibrary().get(0).getValue().split("\\|")[0];
		return ref.substring(ref.lastIndexOf('/') + 1);
	}

	private static void collect(List<PlanDefinitionActionComponent> actions, Set<String> into) {
		for (PlanDefinitionActionComponent a : actions) {
			for (PlanDefinition.PlanDefinitionActionConditionComponent c : a.getCondition()) {
				if (c.hasExpression()) {
					into.add(define(c.getExpression()));
				}
			}
			for (PlanDefinition.PlanDefinitionActionDynamicValueComponent d : a.getDynamicValue()) {
				if (d.hasExpression()) {
					into.add(define(d.getExpression()));
				}
			}
			collect(a.getAction(), into);
		}
	}

	/** The define an expression names: only {@code text/cql-identifier} (what the package writes) is supported. */
	private static String define(Expression e) {
		String language = e.getLanguage();
		if (!"text/cql-identifier".equals(language) && !"text/cql.identifier".equals(language)) {
			throw new IllegalStateException("expression '" + e.getExpression() + "' is in " + language
					+ "; the evaluation core evaluates text/cql-identifier only");
		}
		return e.getExpression();
	}

	private static Action action(
			PlanDefinitionActionComponent a, Map<String, Object> values, Knowledge knowledge, String patient) {
		if (!applies(a, values)) {
			return null;
		}
		String title = a.hasTitle() ? a.getTitle() : null;
		String description = a.hasDescription() ? a.getDescription() : null;
		for (PlanDefinition.PlanDefinitionActionDynamicValueComponent d : a.getDynamicValue()) {
			Object v = d.hasExpression() ? values.get(define(d.getExpression())) : null;
			if (!(v instanceof String s)) {
				continue;
			}
			switch (d.getPath()) {
				case "action.title", "title" -> title = s;
				case "action.description", "description" -> description = s;
				default -> throw new IllegalStateException("action " + a.getId() + ": dynamic value path " + d.getPath()
						+ " is not one the evaluation core applies (action.title, action.description)");
			}
		}
		ActivityDefinition definition = null;
		Resource resource = null;
		if (a.hasDefinitionCanonicalType()) {
			String ref = a.getDefinitionCanonicalType().getValue();
			if (ref != null && ref.contains("ActivityDefinition/")) {
				definition = knowledge.activity(ref);
				if (definition == null) {
					throw new IllegalStateException("action " + a.getId() + ": " + ref + " is not in the loaded knowledge");
				}
				resource = Activities.draft(definition, patient);
			}
		}
		List<Action> sub = new ArrayList<>();
		for (PlanDefinitionActionComponent s : a.getAction()) {
			Action fired = action(s, values, knowledge, patient);
			if (fired != null) {
				sub.add(fired);
			}
		}
		return new Action(a.getId(), title, description, a.hasPriority() ? a.getPriority().toCode() : null,
				definition, resource, sub);
	}
}
