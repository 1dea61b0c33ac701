package org.example.gl.batch;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * What the package's retrieves can return, as Python's {@code guideline/evaluation/pushdown.py} decides it and
 * sends it (the type pattern, the read types with their codes, the raw-drop patterns): the same decision on the
 * same raw line, so this reader and Python's skip and drop the same lines.
 */
final class Reads {
  /** Null: read everything (the push-down is off). */
  private final Pattern typePattern;
  private final Set<String> always = new HashSet<>();
  /** Bytes looked at for the type, as Python's {@code TYPE_HEAD}. */
  private final int head;
  /** Read type -> the {@code system|code}s that keep a resource (null: every resource of the type). */
  private final Map<String, Set<String>> types = new HashMap<>();
  /** Per code-filtered type: any of its codes as a {@code "code"} value on the raw line ({@code drops}). */
  private final Map<String, Pattern> codePatterns = new HashMap<>();
  /** The one key that places a line, with its reference object, as {@code pushdown.LINK_PATTERN} (null: no drops). */
  private Pattern link;

  Reads(JsonNode spec) {
    if (spec == null || spec.isNull() || spec.isMissingNode()) {
      typePattern = null;
      head = 0;
      return;
    }
    typePattern = Pattern.compile(spec.get("typePattern").asText());
    head = spec.get("head").asInt();
    spec.get("always").forEach(n -> always.add(n.asText()));
    spec.get("types").fields().forEachRemaining(e -> {
      if (e.getValue().isNull()) {
        types.put(e.getKey(), null);
      } else {
        Set<String> codes = new HashSet<>();
        e.getValue().forEach(n -> codes.add(n.asText()));
        types.put(e.getKey(), codes);
      }
    });
    JsonNode drop = spec.path("drop");
    if (drop.isObject()) {
      link = Pattern.compile(drop.get("link").asText());
      drop.get("codes").fields()
          .forEachRemaining(e -> codePatterns.put(e.getKey(), Pattern.compile(e.getValue().asText())));
    }
  }

  /** Whether every line is read. */
  boolean everything() {
    return typePattern == null;
  }

  /**
   * Whether the raw line {@code raw[from, len)} is of a type no retrieve reads ({@code pushdown.Reads.skips}): then
   * it is never scanned nor parsed. Latin-1 maps each byte to one char, so the pattern sees the bytes Python's sees.
   */
  boolean skips(byte[] raw, int from, int len) {
    if (typePattern == null) {
      return false;
    }
    // The type is within the first bytes of a line that starts with it: never decode a whole Claim.
    String text = new String(raw, from, Math.min(len - from, head), StandardCharsets.ISO_8859_1);
    Matcher m = typePattern.matcher(text);
    if (!m.lookingAt()) {
      return false;
    }
    String type = m.group(1);
    return !always.contains(type) && !types.containsKey(type);
  }

  /** Whether a scanned resource (its type and the {@code system|code}s of its {@code code}) can be retrieved. */
  boolean keeps(String type, List<String> codes) {
    if (typePattern == null || always.contains(type)) {
      return true;
    }
    if (!types.containsKey(type)) {
      return false;
    }
    Set<String> want = types.get(type);
    if (want == null) {
      return true;
    }
    for (String c : codes) {
      if (want.contains(c)) {
        return true;
      }
    }
    return false;
  }

  /**
   * The patient of the raw line {@code raw[from, len)} when {@code keeps} would refuse it and the raw text makes
   * its patient certain ({@code pushdown.Reads.drops}, the same checks in the same order); else null: scan it.
   */
  String drops(byte[] raw, int from, int len) {
    if (typePattern == null || codePatterns.isEmpty()) {
      return null;
    }
    // The type first, on the first bytes only (as skips): a line of a type read whole is never decoded here.
    Matcher m = typePattern.matcher(new String(raw, from, Math.min(len - from, head), StandardCharsets.ISO_8859_1));
    Pattern codes = m.lookingAt() ? codePatterns.get(m.group(1)) : null;
    if (codes == null) {
      return null;
    }
    String text = new String(raw, from, len - from, StandardCharsets.ISO_8859_1);
    if (codes.matcher(text).find() || text.indexOf('\\') >= 0) {
      return null;
    }
    int at = text.indexOf("\"subject\"");
    if (at >= 0) {
      if (text.indexOf("\"subject\"", at + 9) >= 0 || text.contains("\"patient\"")) {
        return null;
      }
    } else {
      at = text.indexOf("\"patient\"");
      if (at < 0 || text.indexOf("\"patient\"", at + 9) >= 0) {
        return null;
      }
    }
    Matcher l = link.matcher(text).region(at, text.length());
    if (!l.lookingAt() || !topLevel(text, at)) {
      return null;
    }
    try {
      String ref = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
          .onUnmappableCharacter(CodingErrorAction.REPORT)
          .decode(ByteBuffer.wrap(l.group(1).getBytes(StandardCharsets.ISO_8859_1))).toString();
      return Stream.patientKey(ref);
    } catch (CharacterCodingException e) {
      return null;
    }
  }

  /**
   * Whether offset {@code at} of a line without backslashes is directly in its top-level object: outside strings,
   * the brackets before it leave only the object's own opening brace open ({@code pushdown._top_level}).
   */
  static boolean topLevel(String text, int at) {
    boolean inString = false;
    int depth = 0;
    for (int i = 0; i < at; i++) {
      char c = text.charAt(i);
      if (c == '"') {
        inString = !inString;
      } else if (!inString) {
        if (c == '{' || c == '[') {
          depth++;
        } else if (c == '}' || c == ']') {
          depth--;
        }
      }
    }
    return !inString && depth == 1;
  }
}
