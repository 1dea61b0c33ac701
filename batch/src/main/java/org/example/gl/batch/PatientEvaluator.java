package org.example.gl.batch;

import ca.uhn.fhir.parser.IParser;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import kotlin.Pair;
import org.example.gl.common.FhirDates;
import org.hl7.elm.r1.VersionedIdentifier;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.Bundle;
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
import org.opencds.cqf.cql.engine.runtime.DateTime;
import org.opencds.cqf.cql.engine.runtime.Interval;
import org.opencds.cqf.cql.engine.terminology.CodeSystemInfo;
import org.opencds.cqf.cql.engine.terminology.TerminologyProvider;
import org.opencds.cqf.cql.engine.terminology.ValueSetInfo;

/** One thread's engine environment; evaluates one patient's Bundle at a time. */
final class PatientEvaluator implements RetrieveProvider, TerminologyProvider {
  private static final String FHIR = "http://hl7.org/fhir";
  private final Package pkg;
  private final IParser parser;
  private final R4FhirModelResolver resolver = new R4FhirModelResolver();
  private final Environment environment;
  private Map<String, List<Object>> byType = Map.of();

  PatientEvaluator(Package pkg, IParser parser) {
    this.pkg = pkg;
    this.parser = parser;
    this.environment =
        new Environment(pkg.libraryManager(), Map.of(FHIR, new CompositeDataProvider(resolver, this)), this);
  }

  /** The CQL engine failed on this patient, or the walk did not finish: the message for the record. */
  static final class Failed extends Exception {
    Failed(String message) {
      super(message, null, false, false);
    }
  }

  /** Nanoseconds spent parsing, evaluating and walking on this thread (for the profile). */
  long parseNanos;
  long evalNanos;
  long walkNanos;

  /** The request protocol's row: define values of `libraries` for the Bundle, as the Node worker answers. */
  ObjectNode evaluate(ObjectMapper json, String bundleText, String at, List<String> libraries, JsonNode expressions,
      Map<String, Object> parameters) {
    ObjectNode row = json.createObjectNode();
    try {
      String patient = loadBundle(bundleText);
      Map<String, List<String>> wanted = new HashMap<>();
      expressions.fields().forEachRemaining(e -> {
        List<String> defs = new ArrayList<>();
        e.getValue().forEach(n -> defs.add(n.asText()));
        wanted.put(e.getKey(), defs);
      });
      Map<String, Map<String, Object>> values = new HashMap<>();
      String error = values(patient, at, libraries, wanted, values, parameters);
      if (error != null) {
        return row.put("ok", false).put("error", error);
      }
      ObjectNode libs = row.put("ok", true).putObject("libraries");
      for (Map.Entry<String, Map<String, Object>> lib : values.entrySet()) {
        ObjectNode out = libs.putObject(lib.getKey());
        for (Map.Entry<String, Object> v : lib.getValue().entrySet()) {
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
      byType = Map.of();
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
    return load(resources);
  }

  private String load(List<IBaseResource> resources) {
    String patient = null;
    Map<String, List<Object>> types = new HashMap<>();
    for (IBaseResource r : resources) {
      String type = ((Resource) r).fhirType();
      types.computeIfAbsent(type, k -> new ArrayList<>()).add(r);
      if (type.equals("Patient")) {
        patient = r.getIdElement().getIdPart();
      }
    }
    byType = types;
    return patient;
  }

  /** Evaluate `libraries` (only the defines `expressions` names) into `into`; null, or the engine's error. */
  private String values(String patient, String at, List<String> libraries, Map<String, List<String>> expressions,
      Map<String, Map<String, Object>> into, Map<String, Object> parameters) {
    long t = System.nanoTime();
    try {
      EvaluationParams.Builder params = new EvaluationParams.Builder();
      for (String lib : libraries) {
        List<EvaluationExpressionRef> refs = new ArrayList<>();
        for (String d : expressions.getOrDefault(lib, List.of())) {
          refs.add(new EvaluationExpressionRef(d));
        }
        params.library(new VersionedIdentifier().withId(lib), new EvaluationParams.LibraryParams(refs));
      }
      params.setContextParameter(new Pair<>("Patient", patient));
      FhirDates.FhirDate when = evaluationTime(at);
      // The request's CQL parameters (a Measure's "Measurement Period"), then the evaluation time, which `at` sets.
      Map<String, Object> all = new HashMap<>(parameters);
      all.put("Evaluation Time", dateTime(when));
      params.setParameters(all);
      params.setEvaluationDateTime(when.toOffsetDateTime().toZonedDateTime());
      EvaluationResults results = new CqlEngine(environment, EnumSet.of(CqlEngine.Options.EnableExpressionCaching))
          .evaluate(params.build());
      if (results.hasExceptions()) {
        RuntimeException e = results.getExceptions().values().iterator().next();
        return String.valueOf(e.getMessage());
      }
      for (Map.Entry<VersionedIdentifier, EvaluationResult> r : results.getResults().entrySet()) {
        Map<String, Object> values = new HashMap<>();
        for (String d : expressions.getOrDefault(r.getKey().getId(), List.of())) {
          Object v = r.getValue().get(d) == null ? null : r.getValue().get(d).getValue();
          // The walk reads only Booleans (conditions) and text (dynamic values): anything else counts as null.
          values.put(d, v instanceof Boolean || v instanceof String ? v : null);
        }
        into.put(r.getKey().getId(), values);
      }
      return null;
    } catch (Exception e) {
      return e.getClass().getSimpleName() + ": " + e.getMessage();
    } finally {
      evalNanos += System.nanoTime() - t;
    }
  }

  /**
   * The {@code recommend --json} line for the loaded patient, in the rounds Python's population mode uses: the
   * gate libraries first, then (if the walk needs more) every library it can still reach. Fills `fired`.
   */
  String document(Walk walk, String contextPatient, String pid, String at, List<String> fired) throws Failed {
    try {
      Map<String, Map<String, Object>> have = new HashMap<>();
      List<String> want = new ArrayList<>(walk.gate);
      for (int round = 0; round < walk.reachable.size() + 2; round++) {
        if (want.isEmpty()) {
          break;
        }
        String error = values(contextPatient, at, want, walk.expressions, have, Map.of());
        if (error != null) {
          throw new Failed("the CQL engine failed on this patient: " + error);
        }
        long t = System.nanoTime();
        try {
          String recs = walk.recommendations(have, fired);
          StringBuilder line = new StringBuilder(256 + recs.length());
          line.append("{\"patient\":");
          Json.quote(pid, line);
          line.append(",\"evaluatedAt\":");
          Json.quote(at, line);
          return line.append(",\"recommendations\":[").append(recs).append("]}").toString();
        } catch (Walk.Missing m) {
          fired.clear();
          List<String> rest = new ArrayList<>();
          for (String lib : walk.reachable) {
            if (!have.containsKey(lib)) {
              rest.add(lib);
            }
          }
          want = rest.contains(m.library) ? rest : List.of(m.library);
        } finally {
          walkNanos += System.nanoTime() - t;
        }
      }
      throw new Failed("the pathway walk did not finish (library evaluation loop); check the PlanDefinitions");
    } finally {
      byType = Map.of();
    }
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
      if (valueSet != null && pkg.members.getOrDefault(valueSet, java.util.Set.of()).contains(c.getSystem() + "|" + c.getCode())) {
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
    java.util.Set<String> m = pkg.members.get(valueSet.getId());
    if (m == null) {
      throw new IllegalArgumentException("unknown value set " + valueSet.getId());
    }
    return m.contains(code.getSystem() + "|" + code.getCode());
  }

  @Override
  public Iterable<Code> expand(ValueSetInfo valueSet) {
    List<Code> codes = pkg.expansions.get(valueSet.getId());
    if (codes == null) {
      throw new IllegalArgumentException("unknown value set " + valueSet.getId());
    }
    return codes;
  }

  @Override
  public Code lookup(Code code, CodeSystemInfo codeSystem) {
    return code;
  }
}
