package org.example.gl.batch;

import ca.uhn.fhir.parser.IParser;
import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.example.gl.engine.Knowledge;
import org.hl7.fhir.r4.model.ActivityDefinition;
import org.hl7.fhir.r4.model.PlanDefinition;

/**
 * The package as the batch evaluator's arguments give it, loaded into the evaluation core: the CQL sources of
 * {@code cql/} and FHIRHelpers (compiled by the Java translator of the engine's own release, with the project's
 * translator options), the value sets' codes, and the PlanDefinitions and ActivityDefinitions the walk reads.
 */
final class Package {
  private Package() {}

  /**
   * Loads and compiles: {@code cqlDir}'s *.cql and {@code fhirHelpers}, {@code options} (the [cql] options),
   * {@code valueSets} (URL -> version -> codes), {@code knowledge} (a JSON array of PlanDefinitions and
   * ActivityDefinitions), parsed with {@code parser}.
   */
  static Knowledge load(Path cqlDir, Path fhirHelpers, JsonNode options, JsonNode valueSets, JsonNode knowledge,
      IParser parser) throws IOException {
    List<String> sources = new ArrayList<>();
    try (Stream<Path> files = Files.list(cqlDir)) {
      for (Path p : files.filter(f -> f.toString().endsWith(".cql")).sorted().toList()) {
        sources.add(Files.readString(p));
      }
    }
    sources.add(Files.readString(fhirHelpers));
    List<PlanDefinition> plans = new ArrayList<>();
    List<ActivityDefinition> activities = new ArrayList<>();
    for (JsonNode r : knowledge) {
      switch (r.path("resourceType").asText()) {
        case "PlanDefinition" -> plans.add(parser.parseResource(PlanDefinition.class, r.toString()));
        case "ActivityDefinition" -> activities.add(parser.parseResource(ActivityDefinition.class, r.toString()));
        default -> throw new IllegalArgumentException(
            "--knowledge holds a " + r.path("resourceType").asText() + "; only PlanDefinitions and ActivityDefinitions");
      }
    }
    return Knowledge.compile(sources, Knowledge.compilerOptions(options), Knowledge.valueSets(valueSets), plans,
        activities);
  }
}
