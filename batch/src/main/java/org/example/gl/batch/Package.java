package org.example.gl.batch;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;
import org.cqframework.cql.cql2elm.CqlCompilerException;
import org.cqframework.cql.cql2elm.CqlCompilerOptions;
import org.cqframework.cql.cql2elm.LibraryBuilder;
import org.cqframework.cql.cql2elm.LibraryManager;
import org.cqframework.cql.cql2elm.ModelManager;
import org.cqframework.cql.cql2elm.StringLibrarySourceProvider;
import org.hl7.elm.r1.VersionedIdentifier;
import org.opencds.cqf.cql.engine.runtime.Code;

/**
 * The package as the Java engine needs it: the CQL sources (compiled by the Java translator of the engine's own
 * release, with the project's translator options) and the value sets' codes.
 */
final class Package {
  final List<String> sources;
  final List<String> libraryNames;
  final CqlCompilerOptions options;
  /** value set URL -> "system|code" members. */
  final Map<String, Set<String>> members;
  /** value set URL -> codes. */
  final Map<String, List<Code>> expansions;

  private Package(
      List<String> sources,
      List<String> libraryNames,
      CqlCompilerOptions options,
      Map<String, Set<String>> members,
      Map<String, List<Code>> expansions) {
    this.sources = sources;
    this.libraryNames = libraryNames;
    this.options = options;
    this.members = members;
    this.expansions = expansions;
  }

  static Package load(Path cqlDir, Path fhirHelpers, JsonNode options, JsonNode valueSets) throws IOException {
    List<String> sources = new ArrayList<>();
    List<String> names = new ArrayList<>();
    try (Stream<Path> files = Files.list(cqlDir)) {
      for (Path p : files.filter(f -> f.toString().endsWith(".cql")).sorted().toList()) {
        sources.add(Files.readString(p));
        names.add(p.getFileName().toString().replaceFirst("\\.cql$", ""));
      }
    }
    sources.add(Files.readString(fhirHelpers));
    Map<String, Set<String>> members = new HashMap<>();
    Map<String, List<Code>> expansions = new HashMap<>();
    valueSets.fields().forEachRemaining(vs -> {
      Set<String> m = members.computeIfAbsent(vs.getKey(), k -> new HashSet<>());
      List<Code> e = expansions.computeIfAbsent(vs.getKey(), k -> new ArrayList<>());
      vs.getValue().fields().forEachRemaining(version -> {
        for (JsonNode c : version.getValue()) {
          String system = c.get("system").asText();
          String code = c.get("code").asText();
          if (m.add(system + "|" + code)) {
            e.add(new Code().withSystem(system).withCode(code));
          }
        }
      });
    });
    return new Package(sources, names, compilerOptions(options), members, expansions);
  }

  private static CqlCompilerOptions compilerOptions(JsonNode config) {
    CqlCompilerOptions options = new CqlCompilerOptions();
    List<CqlCompilerOptions.Options> set = new ArrayList<>();
    for (JsonNode o : config.path("options")) {
      set.add(CqlCompilerOptions.Options.valueOf(o.asText()));
    }
    options.setOptions(set.toArray(new CqlCompilerOptions.Options[0]));
    if (config.has("signatureLevel")) {
      options.setSignatureLevel(LibraryBuilder.SignatureLevel.valueOf(config.get("signatureLevel").asText()));
    }
    if (config.has("compatibilityLevel")) {
      options.setCompatibilityLevel(config.get("compatibilityLevel").asText());
    }
    options.setAnalyzeDataRequirements(config.path("analyzeDataRequirements").asBoolean(false));
    return options;
  }

  private LibraryManager manager;

  /**
   * The one library manager every thread's environment shares. {@link #compile} fills its cache with every
   * library (and every include) before any thread starts, so the threads only read it.
   */
  LibraryManager libraryManager() {
    return manager;
  }

  /** Compile every library once: a CQL error stops the start-up with its message, not the first patient. */
  void compile() {
    manager = new LibraryManager(new ModelManager(), options);
    manager.getLibrarySourceLoader().registerProvider(new StringLibrarySourceProvider(sources));
    for (String name : libraryNames) {
      List<CqlCompilerException> errors = new ArrayList<>();
      manager.resolveLibrary(new VersionedIdentifier().withId(name), errors);
      for (CqlCompilerException e : errors) {
        if (e.getSeverity() == CqlCompilerException.ErrorSeverity.Error) {
          throw new IllegalStateException(name + ": " + e.getMessage());
        }
      }
    }
  }
}
