package org.example.gl.batch;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.json.JsonReadFeature;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Future;
import java.util.function.Supplier;
import org.example.gl.common.CollectionBundle;
import org.example.gl.common.NdjsonLines;

/**
 * Population mode's input read in the JVM: an NDJSON file grouped by patient, exactly as Python's
 * {@code records._ndjson_records} groups it, each patient evaluated and walked on the pool, one output line per
 * record in input order. A record Python would report as bad is not judged here: its byte range goes back to
 * Python, which reads that slice with its own reader and reports it with the usual position and message.
 *
 * <p>Output lines (tab-separated; JSON texts hold no tab or line break): {@code R consumed first last fired doc},
 * {@code E consumed first last patient-json message-json}, {@code B consumed start end first-line}.
 */
class Stream { // not final: the grouping tests override submit() to see the groups without an engine
  private static final JsonFactory JSON =
      JsonFactory.builder().enable(JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS).build();

  /** One resource line, as the grouping needs it. */
  private static final class Line {
    boolean problem;
    String type;
    String id;
    String subject;
    String patient;
    List<String> codes;
    String text;
    /** Dropped on its raw text ({@link Reads#drops}): no text, never in a Bundle. */
    boolean unscanned;
  }

  /**
   * Consecutive lines of one patient (one record): its key (the Patient id), first and last line numbers, byte range,
   * the Patient's line, whether Python must judge it ({@code bad}), every line's text and the ones the walk keeps.
   */
  static final class Group {
    String key;
    long first;
    long last;
    long start;
    long end;
    long patientLine = -1;
    boolean bad;
    final List<String> all = new ArrayList<>();
    final List<String> kept = new ArrayList<>();
  }

  private final Document document;
  private final ExecutorService pool;
  private final Supplier<PatientEvaluator> evaluators;
  private final String at;
  /** Only parse every line of every record with HAPI (the parse-only ceiling), write nothing per record. */
  boolean parseOnly;
  private final CharsetDecoder utf8 = StandardCharsets.UTF_8.newDecoder()
      .onMalformedInput(CodingErrorAction.REPORT).onUnmappableCharacter(CodingErrorAction.REPORT);
  long scanNanos;
  long lines;
  long dropped;
  /** Lines skipped unscanned (see {@link Reads#skips}). */
  long skipped;
  long records;

  Stream(Document document, ExecutorService pool, Supplier<PatientEvaluator> evaluators, String at) {
    this.document = document;
    this.pool = pool;
    this.evaluators = evaluators;
    this.at = at;
  }

  /** Read `path`, evaluate every record on the pool, write one line per record to `out` in input order. */
  void run(String path, PrintStream out, int inFlight) throws IOException, InterruptedException {
    BlockingQueue<Future<String>> queue = new ArrayBlockingQueue<>(inFlight);
    Future<String> end = CompletableFuture.completedFuture(null);
    Thread writer = new Thread(() -> {
      try {
        for (Future<String> f = queue.take(); f != end; f = queue.take()) {
          String line = f.get();
          if (line != null) {
            out.println(line);
          }
        }
      } catch (Exception e) {
        throw new IllegalStateException(e);
      }
      out.flush();
    }, "stream-writer");
    writer.start();
    try (InputStream in = new FileInputStream(path)) {
      read(in, queue);
    } finally {
      queue.put(end);
      writer.join();
    }
  }

  /** The group the lines read so far leave open (its record is not finished until another patient starts). */
  private Group open;

  /** Reads every line (the shared NDJSON reader counts and positions them), then finishes the last group. */
  void read(InputStream in, BlockingQueue<Future<String>> queue) throws IOException, InterruptedException {
    long[] consumed = {0};
    NdjsonLines.read(in, (raw, from, len, lineno, start, end) -> {
      open = line(raw, from, len, lineno, start, end, open, queue);
      consumed[0] = end;
    });
    if (open != null) {
      finish(open, consumed[0], queue);
      open = null;
    }
  }

  /** One line (with its newline): the grouping step of {@code _ndjson_records}; the group it leaves open. */
  private Group line(byte[] raw, int from, int len, long lineno, long start, long end, Group group,
      BlockingQueue<Future<String>> queue) throws InterruptedException {
    if (NdjsonLines.isBlank(raw, from, len)) {
      return group; // blank lines separate nothing and carry nothing
    }
    lines++;
    if (!parseOnly && document.reads.skips(raw, from, len)) {
      // Never scanned: whose line it is stays unknown; in a file grouped by patient it is the open group's.
      skipped++;
      if (group != null) {
        group.last = lineno;
        group.end = end;
      }
      return group;
    }
    String droppedKey = parseOnly ? null : document.reads.drops(raw, from, len);
    Line l;
    if (droppedKey != null) {
      // Dropped unscanned (see Reads#drops): grouped as a scanned line the walk does not keep, its patient certain.
      l = new Line();
      l.type = "";
      l.unscanned = true;
    } else {
      l = scan(raw, from, len);
    }
    if (l.problem) {
      if (group == null) {
        group = newGroup(null, lineno, start);
      }
      group.last = lineno;
      group.end = end;
      group.bad = true;
      return group;
    }
    String key;
    if (l.type.equals("Patient")) {
      key = l.id != null && !l.id.isEmpty() ? l.id : null;
      if (key == null) {
        if (group != null) {
          finish(group, end, queue);
        }
        Group g = newGroup(null, lineno, start);
        g.end = end;
        g.bad = true;
        return g;
      }
    } else if (l.unscanned) {
      key = droppedKey;
    } else {
      key = patientKey(l.subject);
      if (key == null) {
        key = patientKey(l.patient);
      }
    }
    if (group == null || (key != null && !key.equals(group.key))) {
      if (group != null) {
        finish(group, end, queue);
      }
      group = newGroup(key, lineno, start);
    } else if (group.key == null && key != null) {
      group.key = key;
    }
    group.last = lineno;
    group.end = end;
    if (l.type.equals("Patient")) {
      if (group.patientLine >= 0) {
        group.bad = true;
        return group;
      }
      group.patientLine = lineno;
    }
    if (!group.bad && l.unscanned) {
      dropped++;
    } else if (!group.bad) {
      group.all.add(l.text);
      if (parseOnly) {
        return group;
      }
      if (keep(l)) {
        group.kept.add(l.text);
      } else {
        dropped++;
      }
    }
    return group;
  }

  private boolean keep(Line l) {
    return document.reads.keeps(l.type, l.codes);
  }

  private static Group newGroup(String key, long lineno, long start) {
    Group g = new Group();
    g.key = key;
    g.first = lineno;
    g.last = lineno;
    g.start = start;
    return g;
  }

  private void finish(Group g, long consumed, BlockingQueue<Future<String>> queue) throws InterruptedException {
    records++;
    if (g.bad || g.patientLine < 0) {
      queue.put(CompletableFuture.completedFuture("B\t" + consumed + "\t" + g.start + "\t" + g.end + "\t" + g.first));
      return;
    }
    queue.put(submit(g, consumed));
  }

  /** The record's output line, computed on the pool (a seam: the grouping tests see the groups without an engine). */
  Future<String> submit(Group g, long consumed) {
    return pool.submit(() -> evaluate(g, consumed));
  }

  private String evaluate(Group g, long consumed) {
    PatientEvaluator ev = evaluators.get();
    if (parseOnly) {
      ev.loadBundle(bundle(g.all));
      return null;
    }
    String head = consumed + "\t" + g.first + "\t" + g.last + "\t";
    try {
      try {
        // One Bundle of the kept lines: HAPI's set-up per parse costs more than the join (measured: per-line
        // parsing took 38 s of JVM CPU for 10,000 patients, one Bundle each 23 s).
        ev.loadBundle(bundle(g.kept));
      } catch (RuntimeException e) {
        // As the whole Bundle: a resource HAPI cannot read fails the patient with the message it always had.
        ev.loadBundle(bundle(g.all));
      }
      List<String> fired = new ArrayList<>();
      String doc = ev.document(document, g.key, at, fired);
      return "R\t" + head + String.join(",", fired) + "\t" + doc;
    } catch (PatientEvaluator.Failed e) {
      return "E\t" + head + Json.quote(g.key) + "\t" + Json.quote(e.getMessage());
    } catch (Exception e) {
      String msg = "the CQL engine failed on this patient: " + e.getClass().getSimpleName() + ": " + e.getMessage();
      return "E\t" + head + Json.quote(g.key) + "\t" + Json.quote(msg);
    }
  }

  private static String bundle(List<String> resources) {
    return CollectionBundle.ofJsonTexts(resources);
  }

  /** The id after "Patient/" in a reference (as {@code bulk.patient_key}), or null. */
  static String patientKey(String ref) {
    if (ref == null) {
      return null;
    }
    String[] parts = ref.split("/", -1);
    for (int j = 0; j < parts.length - 1; j++) {
      if (parts[j].equals("Patient") && !parts[j + 1].isEmpty()) {
        return parts[j + 1];
      }
    }
    return null;
  }

  private Line scan(byte[] raw, int from, int len) {
    long t = System.nanoTime();
    Line l = new Line();
    try {
      String text = pythonStrip(utf8.decode(ByteBuffer.wrap(raw, from, len - from)).toString());
      l.text = text.indexOf('\r') >= 0 ? text.replace('\r', ' ') : text;
      try (JsonParser p = JSON.createParser(text)) {
        if (p.nextToken() != JsonToken.START_OBJECT) {
          skipAll(p);
          l.problem = true;
          return l;
        }
        fields(p, l);
        if (p.nextToken() != null) {
          l.problem = true;
        }
      }
      if (l.type == null || l.type.equals("Bundle")) {
        l.problem = true;
      }
    } catch (CharacterCodingException e) {
      l.problem = true;
    } catch (IOException | RuntimeException e) {
      l.problem = true;
    } finally {
      scanNanos += System.nanoTime() - t;
    }
    return l;
  }

  private static void skipAll(JsonParser p) throws IOException {
    while (p.nextToken() != null) {
      p.skipChildren();
    }
  }

  private static void fields(JsonParser p, Line l) throws IOException {
    l.codes = new ArrayList<>();
    while (p.nextToken() == JsonToken.FIELD_NAME) {
      String name = p.currentName();
      JsonToken v = p.nextToken();
      switch (name) {
        case "resourceType" -> l.type = v == JsonToken.VALUE_STRING ? p.getText() : null;
        case "id" -> l.id = v == JsonToken.VALUE_STRING ? p.getText() : null;
        case "subject" -> l.subject = reference(p, v);
        case "patient" -> l.patient = reference(p, v);
        case "code" -> l.codes = codes(p, v);
        default -> p.skipChildren();
      }
    }
  }

  private static String reference(JsonParser p, JsonToken v) throws IOException {
    if (v != JsonToken.START_OBJECT) {
      p.skipChildren();
      return null;
    }
    String ref = null;
    while (p.nextToken() == JsonToken.FIELD_NAME) {
      String name = p.currentName();
      JsonToken t = p.nextToken();
      if (name.equals("reference")) {
        ref = t == JsonToken.VALUE_STRING ? p.getText() : null;
      }
      p.skipChildren();
    }
    return ref;
  }

  private static List<String> codes(JsonParser p, JsonToken v) throws IOException {
    List<String> out = new ArrayList<>();
    if (v != JsonToken.START_OBJECT) {
      p.skipChildren();
      return out;
    }
    while (p.nextToken() == JsonToken.FIELD_NAME) {
      String name = p.currentName();
      JsonToken t = p.nextToken();
      if (!name.equals("coding") || t != JsonToken.START_ARRAY) {
        p.skipChildren();
        continue;
      }
      while (p.nextToken() == JsonToken.START_OBJECT) {
        String system = null;
        String code = null;
        while (p.nextToken() == JsonToken.FIELD_NAME) {
          String f = p.currentName();
          JsonToken ft = p.nextToken();
          if (f.equals("system") && ft == JsonToken.VALUE_STRING) {
            system = p.getText();
          } else if (f.equals("code") && ft == JsonToken.VALUE_STRING) {
            code = p.getText();
          } else {
            p.skipChildren();
          }
        }
        if (system != null && code != null) {
          out.add(system + "|" + code);
        }
      }
      // A non-object inside `coding` ends the loop on its token; skip whatever remains of the array.
      if (p.currentToken() != JsonToken.END_ARRAY) {
        p.skipChildren();
        while (p.nextToken() != JsonToken.END_ARRAY) {
          p.skipChildren();
        }
      }
    }
    return out;
  }

  /** Python's {@code str.strip()}: the characters {@code str.isspace} is true for, at both ends. */
  static String pythonStrip(String s) {
    int lo = 0;
    int hi = s.length();
    while (lo < hi && isPythonSpace(s.charAt(lo))) {
      lo++;
    }
    while (hi > lo && isPythonSpace(s.charAt(hi - 1))) {
      hi--;
    }
    return lo == 0 && hi == s.length() ? s : s.substring(lo, hi);
  }

  private static boolean isPythonSpace(char c) {
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680
        || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
  }

  /** The counters for the end-of-run line. */
  Map<String, Long> stats() {
    return Map.of("records", records, "lines", lines, "skipped", skipped, "dropped", dropped,
        "scanMs", scanNanos / 1_000_000);
  }
}
