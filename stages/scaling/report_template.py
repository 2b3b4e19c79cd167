"""The jinja2 template of the scaling study report (kept in a module so it ships with the package)."""

REPORT_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
.wide { overflow-x: auto; }  /* a table wider than the page scrolls by itself, not the whole page */
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f3f3f3; } td.text { text-align: left; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.8em; }
li { margin: 0.3em 0; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<h2>What the study found</h2>
<ul>
{% for s in statements %}  <li>{{ s }}</li>
{% endfor %}</ul>
{% if figures %}<h2>Figures</h2>
{% for f in figures %}<figure><img src="data:image/png;base64,{{ f.data }}" alt="{{ f.caption }}">
<figcaption>{{ f.caption }}</figcaption></figure>
{% endfor %}{% endif %}
{% for t in tables %}<h2>{{ t.name }}</h2>
<div class="wide"><table><tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in t.rows %}<tr>{% for v in row %}<td{% if v is string %} class="text"{% endif %}>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table></div>
{% if t.truncated %}<p>{{ t.truncated }} more rows not shown.</p>{% endif %}
{% endfor %}
<h2>Configuration</h2>
{% if config_text %}<p>From <code>{{ config_path }}</code>:</p>
<pre>{{ config_text }}</pre>{% else %}<p>Not run from a config file (library call); the inputs' parameters follow.</p>{% endif %}
{% for m in manifests %}<p><b>{{ m.step }}</b> (stage <code>{{ m.stage }}</code>): <code>{{ m.params }}</code></p>
{% endfor %}
</body>
</html>
"""
