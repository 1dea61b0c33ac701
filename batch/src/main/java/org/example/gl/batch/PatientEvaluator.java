package org.example.gl.batch;

import ca.uhn.fhir.parser.IParser;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.example.gl.common.FhirDates;
import org.example.gl.engine.Evaluator;
import org.example.gl.engine.Knowledge;
import org.example.gl.engine.Pathway;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.Bundle;
import org.opencds.cqf.cql.engine.runtime.DateTime;
import org.opencds.cqf.cql.engine.runtime.Interval;

/**
 * One thread's evaluator: the batch request protocol over the evaluation core's warm environment
 * ({@link Evaluator}), one patient's Bundle at a time.
 */
final class PatientEvaluator {
  private final IParser parser;
  private final Evaluator core;

  PatientEvaluator(Knowledge knowledge, IParser parser) {
    this.parser = parser;
    this.core = new Evaluator(knowledge);
  }

  /** The CQL engine failed on this patient, or the walk did not finish: the message for the record. */
  static final class Failed extends Exception {
    Failed(String message) {
      super(message, null, false, false);
    }
  }

  /** Nanoseconds spent parsing and walking on this thread (for the profile); evaluation: {@link #evalNanos}. */
  long parseNanos;
  long walkNanos;

  /** Nanoseconds spent in the CQL engine on this thread. */
  long evalNanos() {
    return core.evalNanos;
  }

  /** Zeroes the profile counters. */
  void resetTimes() {
    parseNanos = 0;
    walkNanos = 0;
    core.evalNanos = 0;
  }

  /** The request protocol's row: define values of `libraries` for the Bundle, as the Node worker answers. */
  ObjectNode evaluate(ObjectMapper json, String bundleText, String at, List<String> libraries, JsonNode expressions,
      Map<String, Object> parameters) {
    ObjectNode row = json.createObjectNode();
    try {
      String patient = loadBundle(bundleText);
      Map<String, List<String>> wanted = new HashMap<>();
      expressions.properties().forEach(e -> {
        List<String> defs = new ArrayList<>();
        e.getValue().forEach(n -> defs.add(n.asText()));
        wanted.put(e.getKey(), defs);
      });
      Map<String, Map<String, Object>> values;
      try {
        values = core.evaluate(patient, libraries, wanted, request(at, parameters));
      } catch (Evaluator.Failed e) {
        return row.put("ok", false).put("error", e.getMessage());
      }
      ObjectNode libs = row.put("ok", true).putObject("libraries");
      for (Map.Entry<String, Map<String, Object>> lib : values.entrySet()) {
        ObjectNode out = libs.putObject(lib.getKey());
        for (Map.Entry<String, Object> v : lib.getValue().entrySet()) {
          // The walk reads only Booleans (conditions) and text (dynamic values): anything else counts as null.
          if (v.getValue() instanceof Boolean b) {
            out.put(v.getKey(), b);
          } else if (v.getValue() instanceof String str) {
            out.put(v.getKey(), str);
          } else {
            out.putNull(v.getKey());
          }
        }
      }
      return row;
    } catch (Exception e) {
      return row.put("ok", false).put("error", e.getClass().getSimpleName() + ": " + e.getMessage());
    } finally {
      core.clear();
    }
  }

  /** Parse a collection Bundle into this thread's retrieve data; the Patient's id. */
  String loadBundle(String bundleText) {
    long t = System.nanoTime();
    Bundle bundle = parser.parseResource(Bundle.class, bundleText);
    List<IBaseResource> resources = new ArrayList<>();
    for (Bundle.BundleEntryComponent e : bundle.getEntry()) {
      if (e.getResource() != null) {
        resources.add(e.getResource());
      }
    }
    parseNanos += System.nanoTime() - t;
    return core.load(resources);
  }

  /**
   * The {@code recommend --json} line for the loaded patient: the evaluation core walks the package's pathways
   * ({@link Pathway#walk}: the pathways' conditions first, the recommendations they reach after), {@code document}
   * writes the line. Fills `fired`.
   */
  String document(Document document, String pid, String at, List<String> fired) throws Failed {
    try {
      List<Pathway.Recommendation> recs;
      try {
        recs = Pathway.walk(core, request(at, Map.of()));
      } catch (Evaluator.Failed e) {
        throw new Failed("the CQL engine failed on this patient: " + e.getMessage());
      }
      long t = System.nanoTime();
      try {
        String body = document.recommendations(recs, fired);
        StringBuilder line = new StringBuilder(256 + body.length());
        line.append("{\"patient\":");
        Json.quote(pid, line);
        line.append(",\"evaluatedAt\":");
        Json.quote(at, line);
        return line.append(",\"recommendations\":[").append(body).append("]}").toString();
      } finally {
        walkNanos += System.nanoTime() - t;
      }
    } finally {
      core.clear();
    }
  }

  /**
   * What a batch request asks the engine for besides the data: the evaluation time {@code at} (the request's
   * "at"), as the engine's evaluation time and as the CQL parameter "Evaluation Time", and the request's other CQL
   * {@code parameters} (see {@link #parameters}). The one place the request protocol's parameters become CQL
   * parameters.
   */
  static Evaluator.Request request(String at, Map<String, Object> parameters) {
    FhirDates.FhirDate when = evaluationTime(at);
    // The request's CQL parameters (a Measure's "Measurement Period"), then the evaluation time, which `at` sets.
    Map<String, Object> all = new HashMap<>(parameters);
    all.put("Evaluation Time", dateTime(when));
    return new Evaluator.Request(when.toOffsetDateTime().toZonedDateTime(), all);
  }

  /**
   * A request's optional "parameters" member as CQL values, typed as the Node worker's: {"type": "DateTime",
   * "value": dateTime} or {"type": "Interval", "low": ..., "high": ..., "lowClosed", "highClosed"} (a Measure's
   * "Measurement Period"); any other type is refused.
   */
  static Map<String, Object> parameters(JsonNode node) {
    Map<String, Object> out = new HashMap<>();
    if (node != null && !node.isNull()) {
      node.fields().forEachRemaining(e -> out.put(e.getKey(), parameterValue(e.getValue())));
    }
    return out;
  }

  private static Object parameterValue(JsonNode v) {
    String type = v.path("type").asText();
    return switch (type) {
      case "DateTime" -> dateTime(evaluationTime(v.get("value").asText()));
      case "Interval" -> new Interval(parameterValue(v.get("low")), v.path("lowClosed").asBoolean(true),
          parameterValue(v.get("high")), v.path("highClosed").asBoolean(true));
      default -> throw new IllegalArgumentException("unsupported parameter value type '" + type + "'");
    };
  }

  /** The evaluation time: a FHIR dateTime with seconds and an offset (what Python's evaltime writes). */
  static FhirDates.FhirDate evaluationTime(String at) {
    FhirDates.FhirDate when = FhirDates.parse(at);
    if (when.offset() == null) {
      throw new IllegalArgumentException("the evaluation time " + at + " needs a time and an offset");
    }
    return when;
  }

  /** A CQL DateTime with the precision the text gives (seconds for 2026-06-01T12:00:00Z) and its offset. */
  static DateTime dateTime(FhirDates.FhirDate when) {
    return new DateTime(when.localText(), when.offset());
  }
}
