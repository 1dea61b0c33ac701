package org.example.gl.batch;

import com.fasterxml.jackson.core.io.JsonStringEncoder;
import com.fasterxml.jackson.databind.JsonNode;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.example.gl.engine.Pathway;
import org.hl7.fhir.r4.model.PlanDefinition;

/**
 * The {@code recommend --json} line of a walked patient: the recommendations the evaluation core's walk
 * ({@link Pathway#walk}, shared with the server) found, written with the text Python rendered
 * ({@code walkplan.compile_walk}): each recommendation's id, its card's title and source (the first applicable
 * top-level action's, as Python's walk takes them) and every applicable activity's JSON, in pre-order. This class
 * only chooses and joins; the one text it encodes itself is a dynamic title, the patient's value of a define.
 */
final class Document {
  /** A recommendation's id as JSON text, and its top-level actions' static title and source as JSON text. */
  private record Card(String title, String source) {}

  private record Rec(String id, Map<String, Card> actions) {}

  /** An activity as Python renders it, and whether it orders something (not only informs). */
  private record Activity(String json, boolean order) {}

  /** What the package's retrieves can return: the reader skips the rest (see {@link Reads}). */
  final Reads reads;

  private final Map<String, Rec> recs = new HashMap<>();
  private final Map<String, Activity> activities = new HashMap<>();

  Document(JsonNode program) {
    program.path("cards").properties().forEach(r -> {
      Map<String, Card> actions = new HashMap<>();
      r.getValue().path("actions").properties().forEach(a ->
          actions.put(a.getKey(), new Card(a.getValue().get("title").asText(), a.getValue().get("source").asText())));
      recs.put(r.getKey(), new Rec(r.getValue().get("id").asText(), actions));
    });
    program.path("activities").properties().forEach(a ->
        activities.put(a.getKey(), new Activity(a.getValue().get("json").asText(), a.getValue().get("order").asBoolean())));
    reads = new Reads(program.path("reads"));
  }

  /** The recommendations' JSON, joined by commas; adds each one's id to `fired`. */
  String recommendations(List<Pathway.Recommendation> walked, List<String> fired) {
    StringBuilder out = new StringBuilder();
    for (Pathway.Recommendation r : walked) {
      String planId = r.plan().getIdElement().getIdPart();
      Rec rec = recs.get(planId);
      if (rec == null) {
        throw new IllegalStateException("no rendered text for PlanDefinition/" + planId + " (walkplan.compile_walk)");
      }
      Pathway.Action first = r.actions().get(0);
      Card card = rec.actions.get(first.id());
      if (card == null) {
        throw new IllegalStateException("no rendered card for PlanDefinition/" + planId + " action " + first.id());
      }
      StringBuilder acts = new StringBuilder();
      boolean[] order = {false};
      for (Pathway.Action a : r.actions()) {
        activities(a, acts, order);
      }
      if (out.length() > 0) {
        out.append(',');
      }
      out.append("{\"id\":").append(rec.id).append(",\"title\":").append(title(r.plan(), first, card))
          .append(",\"informational\":").append(!order[0])
          .append(",\"source\":").append(card.source).append(",\"activities\":[").append(acts).append("]}");
      fired.add(planId);
    }
    return out.toString();
  }

  private void activities(Pathway.Action a, StringBuilder out, boolean[] order) {
    if (a.definition() != null) {
      Activity act = activities.get(a.definition().getIdElement().getIdPart());
      if (act == null) {
        throw new IllegalStateException("no rendered activity for ActivityDefinition/"
            + a.definition().getIdElement().getIdPart() + " (walkplan.compile_walk)");
      }
      if (out.length() > 0) {
        out.append(',');
      }
      out.append(act.json);
      order[0] |= act.order;
    }
    for (Pathway.Action sub : a.actions()) {
      activities(sub, out, order);
    }
  }

  /**
   * The card's title as JSON text: a dynamic title (a non-empty text other than the action's own), encoded as
   * Python's {@code compact} writes a string, else the static title Python rendered.
   */
  private static String title(PlanDefinition plan, Pathway.Action action, Card card) {
    String t = action.title();
    String fixed = staticTitle(plan, action.id());
    if (t == null || t.isEmpty() || t.equals(fixed)) {
      return card.title;
    }
    return "\"" + new String(JsonStringEncoder.getInstance().quoteAsString(t)) + "\"";
  }

  private static String staticTitle(PlanDefinition plan, String actionId) {
    for (PlanDefinition.PlanDefinitionActionComponent a : plan.getAction()) {
      if (actionId != null && actionId.equals(a.getId())) {
        return a.getTitle();
      }
    }
    return null;
  }
}
