package org.example.gl.batch;

import com.fasterxml.jackson.databind.JsonNode;
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
 * sends it (the type pattern, the read types with their codes): the same decision on the same raw line, so this
 * reader and Python's skip the same lines.
 */
final class Reads {
  /** Null: read everything (the push-down is off). */
  private final Pattern typePattern;
  private final Set<String> always = new HashSet<>();
  /** Bytes looked at for the type, as Python's {@code TYPE_HEAD}. */
  private final int head;
  /** Read type -> the {@code system|code}s that keep a resource (null: every resource of the type). */
  private final Map<String, Set<String>> types = new HashMap<>();

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
}
