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
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.example.gl.engine.Knowledge;

/**
 * The batch evaluator's process: compiles the package's CQL with the Java translator, then answers requests.
 *
 * <p>Protocol (one JSON document per line on stdin and stdout, as the Node worker's): after start-up it prints
 * {"ready": true} (or {"ready": false, "error": ...}); each request {"id", "at", "libraries": [...],
 * "expressions": {library: [define, ...]}, "bundles": [collection Bundle, ...], optional "parameters": {name: value}}
 * is answered by {"id", "rows": [...]}
 * with one row per bundle, in order: {"ok": true, "libraries": {library: {define: value}}} or {"ok": false,
 * "error": message}. The bundles of one request are evaluated on N threads. Logging goes to stderr only.
 */
public final class Main {
  private Main() {}

  /**
   * Entry point: {@code --cql DIR --fhirhelpers FILE --options FILE --valuesets FILE --program FILE --knowledge FILE
   * --threads N}.
   */
  public static void main(String[] args) throws Exception {
    PrintStream protocol = new PrintStream(new FileOutputStream(FileDescriptor.out), false, StandardCharsets.UTF_8);
    System.setOut(System.err); // anything a library prints must not end up in the protocol
    ObjectMapper json = new ObjectMapper();
    Knowledge knowledge;
    Document document;
    int threads;
    try {
      threads = Integer.parseInt(arg(args, "--threads"));
      document = new Document(json.readTree(Files.readString(Path.of(arg(args, "--program")))));
      knowledge = Package.load(
          Path.of(arg(args, "--cql")),
          Path.of(arg(args, "--fhirhelpers")),
          json.readTree(Files.readString(Path.of(arg(args, "--options")))),
          json.readTree(Files.readString(Path.of(arg(args, "--valuesets")))),
          json.readTree(Files.readString(Path.of(arg(args, "--knowledge")))),
          FhirContext.forR4Cached().newJsonParser());
    } catch (Exception e) {
      ObjectNode fail = json.createObjectNode().put("ready", false).put("error", String.valueOf(e.getMessage()));
      protocol.println(json.writeValueAsString(fail));
      protocol.flush();
      System.exit(3);
      return;
    }
    ExecutorService pool = Executors.newFixedThreadPool(threads);
    ThreadLocal<PatientEvaluator> evaluators =
        ThreadLocal.withInitial(() -> {
          PatientEvaluator ev = new PatientEvaluator(knowledge, FhirContext.forR4Cached().newJsonParser());
          ALL.add(ev);
          return ev;
        });
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
      ObjectNode res = json.createObjectNode();
      res.set("id", req.get("id"));
      if (req.has("stream")) {
        Stream stream = new Stream(document, pool, evaluators::get, at);
        stream.parseOnly = req.path("parseOnly").asBoolean(false);
        stream.run(req.get("stream").asText(), protocol, 8 * threads + 16);
        res.put("end", true).set("stats", json.valueToTree(stats(stream, evaluators, pool, threads)));
        protocol.println("D\t" + json.writeValueAsString(res));
        protocol.flush();
        continue;
      }
      List<Future<ObjectNode>> rows = new ArrayList<>();
      if (req.has("walk")) {
        // The bundles follow the header, one per line, as Python wrote them: no JSON tree of the whole request.
        int count = req.get("count").asInt();
        JsonNode patients = req.get("patients");
        for (int i = 0; i < count; i++) {
          String text = in.readLine();
          String pid = patients.get(i).asText();
          rows.add(pool.submit(() -> walked(json, evaluators.get(), document, text, pid, at)));
        }
      } else {
        List<String> libraries = new ArrayList<>();
        req.get("libraries").forEach(n -> libraries.add(n.asText()));
        JsonNode expressions = req.get("expressions");
        Map<String, Object> parameters = PatientEvaluator.parameters(req.get("parameters"));
        for (JsonNode bundle : req.get("bundles")) {
          String text = bundle.toString();
          rows.add(pool.submit(() -> evaluators.get().evaluate(json, text, at, libraries, expressions, parameters)));
        }
      }
      ArrayNode out = res.putArray("rows");
      for (Future<ObjectNode> row : rows) {
        out.add(row.get());
      }
      protocol.println(json.writeValueAsString(res));
      protocol.flush();
    }
    pool.shutdown();
  }

  /** One patient of a walk request: its document line and fired recommendations, or the error for its record. */
  private static ObjectNode walked(ObjectMapper json, PatientEvaluator ev, Document document, String bundle, String pid, String at) {
    ObjectNode row = json.createObjectNode();
    try {
      ev.loadBundle(bundle);
      List<String> fired = new ArrayList<>();
      String doc = ev.document(document, pid, at, fired);
      ArrayNode f = row.put("ok", true).put("line", doc).putArray("fired");
      fired.forEach(f::add);
    } catch (PatientEvaluator.Failed e) {
      row.put("ok", false).put("error", e.getMessage());
    } catch (Exception e) {
      row.put("ok", false)
          .put("error", "the CQL engine failed on this patient: " + e.getClass().getSimpleName() + ": " + e.getMessage());
    }
    return row;
  }

  private static final java.util.List<PatientEvaluator> ALL = java.util.Collections.synchronizedList(new ArrayList<>());

  /** Where the time went, for the profile: the reader's scan and each thread's parse, evaluation and walk. */
  private static java.util.Map<String, Object> stats(
      Stream stream, ThreadLocal<PatientEvaluator> evaluators, ExecutorService pool, int threads) {
    java.util.Map<String, Object> out = new java.util.LinkedHashMap<>(stream.stats());
    long parse = 0;
    long eval = 0;
    long walk = 0;
    synchronized (ALL) {
      for (PatientEvaluator ev : ALL) {
        parse += ev.parseNanos;
        eval += ev.evalNanos();
        walk += ev.walkNanos;
        ev.resetTimes();
      }
    }
    out.put("parseMs", parse / 1_000_000);
    out.put("evalMs", eval / 1_000_000);
    out.put("walkMs", walk / 1_000_000);
    return out;
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
