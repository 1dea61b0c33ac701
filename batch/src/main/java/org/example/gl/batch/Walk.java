package org.example.gl.batch;

import com.fasterxml.jackson.core.io.JsonStringEncoder;
import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The pathway walk, as Python's {@code guideline/evaluation/walk.py} does it, over the tree that
 * {@code walkplan.compile_walk} built from the package: which actions apply (a condition is met only by a true
 * Boolean), the recommendations they reach, each one's card and activities. All document text comes ready-made
 * from Python; this class chooses and joins it into the {@code recommend --json} line.
 */
final class Walk {
  /** The walk reached a library not evaluated yet for this patient. */
  static final class Missing extends Exception {
    final String library;

    Missing(String library) {
      super(library, null, false, false);
      this.library = library;
    }
  }

  /** A card: its static text as JSON, and the defines whose text value replaces the detail or the title. */
  private record Card(String title, String source, String description, String lib, List<String> detail,
      List<String> titles) {}

  private record Step(String lib, List<String> cond, int rec, Card card, String activity, boolean order, List<Step> sub) {}

  /** A recommendation: its id as JSON text and as the plain id. */
  private record Rec(String id, String plainId, List<Step> steps) {}

  final List<String> gate = new ArrayList<>();
  final List<String> reachable = new ArrayList<>();
  final Map<String, List<String>> expressions = new HashMap<>();
  /** What the package's retrieves can return: the reader skips the rest (see {@link Reads}). */
  final Reads reads;

  private final List<List<Step>> pathways = new ArrayList<>();
  private final List<Rec> recs = new ArrayList<>();

  Walk(JsonNode program) {
    program.get("gate").forEach(n -> gate.add(n.asText()));
    program.get("reachable").forEach(n -> reachable.add(n.asText()));
    program.get("expressions").fields().forEachRemaining(e -> {
      List<String> defs = new ArrayList<>();
      e.getValue().forEach(n -> defs.add(n.asText()));
      expressions.put(e.getKey(), defs);
    });
    program.get("pathways").forEach(p -> pathways.add(steps(p)));
    program.get("recs").forEach(r -> recs.add(new Rec(r.get("id").asText(), r.get("plainId").asText(), steps(r.get("steps")))));
    reads = new Reads(program.path("reads"));
  }

  private static List<Step> steps(JsonNode list) {
    List<Step> out = new ArrayList<>();
    for (JsonNode s : list) {
      List<String> cond = new ArrayList<>();
      s.get("cond").forEach(n -> cond.add(n.asText()));
      Card card = null;
      JsonNode c = s.get("card");
      if (c != null && !c.isNull()) {
        List<String> detail = new ArrayList<>();
        c.get("detail").forEach(n -> detail.add(n.asText()));
        List<String> titles = new ArrayList<>();
        c.path("titles").forEach(n -> titles.add(n.asText()));
        card = new Card(c.get("title").asText(), c.get("source").asText(), c.get("description").asText(),
            text(c.get("lib")), detail, titles);
      }
      JsonNode a = s.get("activity");
      boolean hasActivity = a != null && !a.isNull();
      out.add(new Step(text(s.get("lib")), cond, s.path("rec").asInt(-1), card,
          hasActivity ? a.get("json").asText() : null, hasActivity && a.get("order").asBoolean(), steps(s.get("sub"))));
    }
    return out;
  }

  private static String text(JsonNode n) {
    return n == null || n.isNull() ? null : n.asText();
  }

  /** The recommendations' JSON (joined by commas) and their ids, or Missing naming the library to evaluate. */
  String recommendations(Map<String, Map<String, Object>> have, List<String> fired) throws Missing {
    Set<String> seen = new LinkedHashSet<>();
    StringBuilder out = new StringBuilder();
    for (List<Step> pathway : pathways) {
      walkPathway(pathway, have, seen, out);
    }
    fired.addAll(seen);
    return out.toString();
  }

  private void walkPathway(List<Step> steps, Map<String, Map<String, Object>> have, Set<String> seen,
      StringBuilder out) throws Missing {
    for (Step step : steps) {
      if (!applies(step, have)) {
        continue;
      }
      if (step.rec >= 0) {
        Rec rec = recs.get(step.rec);
        StringBuilder one = recommendation(rec, have);
        if (one != null && seen.add(rec.plainId)) {
          if (out.length() > 0) {
            out.append(',');
          }
          out.append(one);
        }
      }
      walkPathway(step.sub, have, seen, out);
    }
  }

  private static Map<String, Object> fetch(String lib, Map<String, Map<String, Object>> have) throws Missing {
    Map<String, Object> values = have.get(lib);
    if (values == null) {
      throw new Missing(lib);
    }
    return values;
  }

  private static boolean applies(Step step, Map<String, Map<String, Object>> have) throws Missing {
    if (step.cond.isEmpty()) {
      return true;
    }
    Map<String, Object> values = fetch(step.lib, have);
    for (String define : step.cond) {
      if (!Boolean.TRUE.equals(values.get(define))) {
        return false;
      }
    }
    return true;
  }

  private static final class Fired {
    StringBuilder head;
    String source;
    final StringBuilder activities = new StringBuilder();
    boolean order;
  }

  private StringBuilder recommendation(Rec rec, Map<String, Map<String, Object>> have) throws Missing {
    Fired fired = new Fired();
    walkRecommendation(rec, rec.steps, have, fired);
    if (fired.head == null) {
      return null;
    }
    return fired.head.append(",\"informational\":").append(!fired.order)
        .append(",\"source\":").append(fired.source).append(",\"activities\":[").append(fired.activities).append("]}");
  }

  private void walkRecommendation(Rec rec, List<Step> steps, Map<String, Map<String, Object>> have, Fired fired)
      throws Missing {
    for (Step step : steps) {
      if (!applies(step, have)) {
        continue;
      }
      if (step.card != null) {
        // The card's detail is not part of the document, but reading it may need its library (as in Python).
        detail(step.card, have);
        String title = title(step.card, have);
        if (fired.head == null) {
          fired.head = new StringBuilder("{\"id\":").append(rec.id).append(",\"title\":").append(title);
          fired.source = step.card.source;
        }
      }
      if (step.activity != null && fired.head != null) {
        if (fired.activities.length() > 0) {
          fired.activities.append(',');
        }
        fired.activities.append(step.activity);
        fired.order |= step.order;
      }
      walkRecommendation(rec, step.sub, have, fired);
    }
  }

  /**
   * The card's title as JSON text: a dynamic title's text value (action.title, as the Python walk takes it),
   * encoded as Python's {@code compact} writes a string, else the static title rendered by Python.
   */
  private static String title(Card card, Map<String, Map<String, Object>> have) throws Missing {
    for (String define : card.titles) {
      Object v = fetch(card.lib, have).get(define);
      if (v instanceof String s && !s.isEmpty()) {
        return "\"" + new String(JsonStringEncoder.getInstance().quoteAsString(s)) + "\"";
      }
    }
    return card.title;
  }

  private static String detail(Card card, Map<String, Map<String, Object>> have) throws Missing {
    for (String define : card.detail) {
      Object v = fetch(card.lib, have).get(define);
      if (v instanceof String s) {
        return s;
      }
    }
    return null;
  }
}
