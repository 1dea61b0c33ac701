package org.example.gl.batch;

import ca.uhn.fhir.context.FhirContext;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * The batch evaluator's process: compiles the package's CQL with the Java translator, then answers requests.
 *
 * <p>Protocol (one JSON document per line on stdin and stdout, as the Node worker's): after start-up it prints
 * {"ready": true} (or {"ready": false, "error": ...}); each request {"id", "at", "libraries": [...],
 * "expressions": {library: [define, ...]}, "bundles": [collection Bundle, ...]} is answered by {"id", "rows": [...]}
 * with one row per bundle, in order: {"ok": true, "libraries": {library: {define: value}}} or {"ok": false,
 * "error": message}. The bundles of one request are evaluated on N threads. Logging goes to stderr only.
 */
public final class Main {
  private Main() {}

  /** Entry point: {@code --cql DIR --fhirhelpers FILE --options FILE --valuesets FILE --threads N}. */
  public static void main(String[] args) throws Exception {
    PrintStream protocol = new PrintStream(new FileOutputStream(FileDescriptor.out), false, StandardCharsets.UTF_8);
    System.setOut(System.err); // anything a library prints must not end up in the protocol
    ObjectMapper json = new ObjectMapper();
    Package pkg;
    int threads;
    try {
      pkg = Package.load(
          Path.of(arg(args, "--cql")),
          Path.of(arg(args, "--fhirhelpers")),
          json.readTree(Files.readString(Path.of(arg(args, "--options")))),
          json.readTree(Files.readString(Path.of(arg(args, "--valuesets")))));
      threads = Integer.parseInt(arg(args, "--threads"));
      pkg.compile();
    } catch (Exception e) {
      ObjectNode fail = json.createObjectNode().put("ready", false).put("error", String.valueOf(e.getMessage()));
      protocol.println(json.writeValueAsString(fail));
      protocol.flush();
      System.exit(3);
      return;
    }
    ExecutorService pool = Executors.newFixedThreadPool(threads);
    ThreadLocal<PatientEvaluator> evaluators =
        ThreadLocal.withInitial(() -> new PatientEvaluator(pkg, FhirContext.forR4Cached().newJsonParser()));
    protocol.println("{\"ready\":true}");
    protocol.flush();
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8), 1 << 20);
    String line;
    while ((line = in.readLine()) != null) {
      if (line.isBlank()) {
        continue;
      }
      JsonNode req = json.readTree(line);
      String at = req.get("at").asText();
      List<String> libraries = new ArrayList<>();
      req.get("libraries").forEach(n -> libraries.add(n.asText()));
      JsonNode expressions = req.get("expressions");
      List<Future<ObjectNode>> rows = new ArrayList<>();
      for (JsonNode bundle : req.get("bundles")) {
        String text = bundle.toString();
        rows.add(pool.submit(() -> evaluators.get().evaluate(json, text, at, libraries, expressions)));
      }
      ObjectNode res = json.createObjectNode();
      res.set("id", req.get("id"));
      ArrayNode out = res.putArray("rows");
      for (Future<ObjectNode> row : rows) {
        out.add(row.get());
      }
      protocol.println(json.writeValueAsString(res));
      protocol.flush();
    }
    pool.shutdown();
  }

  private static String arg(String[] args, String name) {
    for (int i = 0; i + 1 < args.length; i++) {
      if (args[i].equals(name)) {
        return args[i + 1];
      }
    }
    throw new IllegalArgumentException("missing argument " + name);
  }
}
