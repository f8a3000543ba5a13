package flare;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** The JSON the worker protocol needs: frame headers in and out. */
final class Json {
    private final String text;
    private int at;

    private Json(String text) { this.text = text; }

    @SuppressWarnings("unchecked")
    static Map<String, Object> object(byte[] utf8) {
        Json json = new Json(new String(utf8, StandardCharsets.UTF_8));
        Object value = json.value();
        json.space();
        if (json.at != json.text.length() || !(value instanceof Map)) {
            throw new IllegalArgumentException("a frame header is not one JSON object");
        }
        return (Map<String, Object>) value;
    }

    private void space() {
        while (at < text.length() && Character.isWhitespace(text.charAt(at))) at++;
    }

    private char next() {
        space();
        if (at >= text.length()) throw new IllegalArgumentException("JSON ends early");
        return text.charAt(at);
    }

    private void expect(char c) {
        if (next() != c) throw new IllegalArgumentException("expected " + c + " at " + at);
        at++;
    }

    private Object value() {
        char c = next();
        switch (c) {
            case '{': {
                at++;
                Map<String, Object> map = new LinkedHashMap<>();
                if (next() == '}') { at++; return map; }
                while (true) {
                    space();
                    String key = string();
                    expect(':');
                    map.put(key, value());
                    if (next() == ',') { at++; continue; }
                    expect('}');
                    return map;
                }
            }
            case '[': {
                at++;
                List<Object> list = new ArrayList<>();
                if (next() == ']') { at++; return list; }
                while (true) {
                    list.add(value());
                    if (next() == ',') { at++; continue; }
                    expect(']');
                    return list;
                }
            }
            case '"':
                return string();
            default:
                return literal();
        }
    }

    private String string() {
        if (text.charAt(at) != '"') throw new IllegalArgumentException("expected a string at " + at);
        at++;
        StringBuilder out = new StringBuilder();
        while (true) {
            char c = text.charAt(at++);
            if (c == '"') return out.toString();
            if (c != '\\') { out.append(c); continue; }
            char e = text.charAt(at++);
            switch (e) {
                case 'n' -> out.append('\n');
                case 't' -> out.append('\t');
                case 'r' -> out.append('\r');
                case 'b' -> out.append('\b');
                case 'f' -> out.append('\f');
                case 'u' -> { out.append((char) Integer.parseInt(text.substring(at, at + 4), 16)); at += 4; }
                default -> out.append(e);
            }
        }
    }

    private Object literal() {
        int start = at;
        while (at < text.length() && "{}[],: \t\r\n".indexOf(text.charAt(at)) < 0) at++;
        String word = text.substring(start, at);
        switch (word) {
            case "true": return Boolean.TRUE;
            case "false": return Boolean.FALSE;
            case "null": return null;
            default:
                if (word.contains(".") || word.contains("e") || word.contains("E")) return Double.parseDouble(word);
                return Long.parseLong(word);
        }
    }

    static String write(Object value) {
        StringBuilder out = new StringBuilder();
        write(out, value);
        return out.toString();
    }

    private static void write(StringBuilder out, Object value) {
        if (value == null) {
            out.append("null");
        } else if (value instanceof String s) {
            out.append('"');
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                switch (c) {
                    case '"' -> out.append("\\\"");
                    case '\\' -> out.append("\\\\");
                    case '\n' -> out.append("\\n");
                    case '\r' -> out.append("\\r");
                    case '\t' -> out.append("\\t");
                    default -> {
                        if (c < 0x20) out.append(String.format("\\u%04x", (int) c));
                        else out.append(c);
                    }
                }
            }
            out.append('"');
        } else if (value instanceof Number || value instanceof Boolean) {
            out.append(value);
        } else if (value instanceof Map<?, ?> map) {
            out.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : map.entrySet()) {
                if (!first) out.append(',');
                first = false;
                write(out, String.valueOf(e.getKey()));
                out.append(':');
                write(out, e.getValue());
            }
            out.append('}');
        } else if (value instanceof List<?> list) {
            out.append('[');
            for (int i = 0; i < list.size(); i++) {
                if (i > 0) out.append(',');
                write(out, list.get(i));
            }
            out.append(']');
        } else {
            write(out, value.toString());
        }
    }
}
