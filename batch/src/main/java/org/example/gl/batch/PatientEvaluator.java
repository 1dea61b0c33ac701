package org.example.gl.batch;

import ca.uhn.fhir.parser.IParser;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import kotlin.Pair;
import org.hl7.elm.r1.VersionedIdentifier;
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

  ObjectNode evaluate(ObjectMapper json, String bundleText, String at, List<String> libraries, JsonNode expressions) {
    ObjectNode row = json.createObjectNode();
    try {
      Bundle bundle = parser.parseResource(Bundle.class, bundleText);
      String patient = null;
      Map<String, List<Object>> types = new HashMap<>();
      for (Bundle.BundleEntryComponent e : bundle.getEntry()) {
        Resource r = e.getResource();
        if (r == null) {
          continue;
        }
        String type = r.fhirType();
        types.computeIfAbsent(type, k -> new ArrayList<>()).add(r);
        if (type.equals("Patient")) {
          patient = r.getIdElement().getIdPart();
        }
      }
      byType = types;
      EvaluationParams.Builder params = new EvaluationParams.Builder();
      for (String lib : libraries) {
        List<EvaluationExpressionRef> refs = new ArrayList<>();
        expressions.path(lib).forEach(n -> refs.add(new EvaluationExpressionRef(n.asText())));
        params.library(new VersionedIdentifier().withId(lib), new EvaluationParams.LibraryParams(refs));
      }
      params.setContextParameter(new Pair<>("Patient", patient));
      params.setParameters(Map.of("Evaluation Time", dateTime(at)));
      params.setEvaluationDateTime(ZonedDateTime.parse(at));
      EvaluationResults results = new CqlEngine(environment, EnumSet.of(CqlEngine.Options.EnableExpressionCaching))
          .evaluate(params.build());
      if (results.hasExceptions()) {
        RuntimeException e = results.getExceptions().values().iterator().next();
        return row.put("ok", false).put("error", String.valueOf(e.getMessage()));
      }
      ObjectNode libs = row.put("ok", true).putObject("libraries");
      for (Map.Entry<VersionedIdentifier, EvaluationResult> r : results.getResults().entrySet()) {
        ObjectNode values = libs.putObject(r.getKey().getId());
        for (JsonNode n : expressions.path(r.getKey().getId())) {
          Object v = r.getValue().get(n.asText()) == null ? null : r.getValue().get(n.asText()).getValue();
          if (v instanceof Boolean b) {
            values.put(n.asText(), b);
          } else if (v instanceof String s) {
            values.put(n.asText(), s);
          } else {
            // The walk reads only Booleans (conditions) and text (dynamic values): anything else counts as null.
            values.putNull(n.asText());
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

  /** A CQL DateTime with the precision the text gives (seconds for 2026-06-01T12:00:00Z) and its offset. */
  static DateTime dateTime(String at) {
    OffsetDateTime odt = OffsetDateTime.parse(at);
    String local = at.endsWith("Z") ? at.substring(0, at.length() - 1) : at.substring(0, at.length() - 6);
    return new DateTime(local, odt.getOffset() == null ? ZoneOffset.UTC : odt.getOffset());
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
