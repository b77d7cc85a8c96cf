"""The report's Jinja2 template (autoescaped; SVG charts are passed in as Markup)."""

TEMPLATE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
 body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; padding: 0 1em; }
 h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { margin-bottom: .3em; }
 nav a { margin-right: 1em; }
 table { border-collapse: collapse; margin: .5em 0 1em; }
 th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
 th { background: #f4f4f4; } td.label, th.label { text-align: left; }
 td.best { font-weight: bold; } .source { color: #777; font-size: .85em; }
 .missing { color: #a33; } .problems { color: #a60; }
 .charts, .media { display: flex; flex-wrap: wrap; gap: 1em; }
 figure { margin: 0; } figcaption { font-size: .85em; color: #555; word-break: break-all; max-width: 520px; }
 .media img, .media video { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
 .media figure { max-width: 100%; } .media .small { min-width: 256px; }
 .chart-title { font-size: 13px; font-weight: 600; } .tick, .legend { font-size: 10px; fill: #444; }
 .bar { background: #4a90d9; height: .8em; display: inline-block; vertical-align: middle; }
 code { background: #f6f6f6; padding: 0 .2em; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<nav>Sections: <a href="#metrics">Metrics</a><a href="#curves">Curves</a><a href="#samples">Samples</a><a href="#funnel">Curation funnel</a><a href="#lineage">Checkpoints and lineage</a></nav>

<section id="inputs">
<h2>Inputs</h2>
{% if missing %}
<p>Not there (yet): the sections below say "missing" in their place.</p>
<ul id="missing-inputs">{% for m in missing %}<li class="missing" data-missing="{{ m }}">missing: <code>{{ m }}</code></li>{% endfor %}</ul>
{% else %}<p>Every expected input is present.</p>{% endif %}
{% if problems %}<ul id="problems">{% for p in problems %}<li class="problems">unreadable: <code>{{ p }}</code></li>{% endfor %}</ul>{% endif %}
</section>

<section id="metrics">
<h2>Metrics</h2>
{% for task in tasks %}
{% set t = tables.get(task) %}
<h3 id="metrics-{{ task }}">{{ titles.get(task, task) }}</h3>
{% if t %}
<table class="metrics" data-task="{{ task }}">
<thead>
<tr><th class="label" rowspan="2">Method</th>{% for label, span in t.groups %}<th colspan="{{ span }}">{{ label }}</th>{% endfor %}<th class="label" rowspan="2">File</th></tr>
<tr>{% for c in t.columns %}<th data-metric="{{ c.key }}">{{ c.label }}{{ c.arrow }}</th>{% endfor %}</tr>
</thead>
<tbody>
{% for r in t.rows %}<tr data-source="{{ r.source }}"><td class="label">{{ r.label }}</td>
{% for c in r.cells %}{% set col = t.columns[loop.index0] %}<td data-group="{{ col.group|join('/') }}" data-metric="{{ col.key }}" data-value="{{ c.value if c.value is not none else '' }}"{% if c.best %} class="best"{% endif %}>{{ c.text }}</td>{% endfor %}
<td class="label source">{{ r.source }}</td></tr>
{% endfor %}
</tbody>
</table>
{% else %}<p class="missing" data-missing="metrics/{{ task }}.json">missing: <code>metrics/{{ task }}.json</code></p>{% endif %}
{% endfor %}
</section>

<section id="curves">
<h2>Curves</h2>
{% for group in curve_groups %}
<h3>{{ group.task }}</h3>
<div class="charts">{% for chart in group.charts %}<figure class="curve" data-name="{{ chart.name }}">{{ chart.svg }}<figcaption>{{ chart.sources|join(', ') }}</figcaption></figure>{% endfor %}</div>
{% endfor %}
{% for task in tasks if task not in curve_tasks %}<p class="missing" data-missing="models/{{ task }}/dvclive/plots/metrics">missing: {{ task }} curves (<code>models/{{ task }}/dvclive/plots/metrics</code>)</p>{% endfor %}
</section>

<section id="samples">
<h2>Samples</h2>
{% for task in media_tasks %}
<h3 id="samples-{{ task }}">{{ sample_titles.get(task, task) }}</h3>
{% if media.get(task) %}
<div class="media">{% for m in media[task] %}<figure data-path="{{ m.path }}">
{% if m.kind == "image" %}<img src="{{ m.data_uri }}" alt="{{ m.path }}" class="small">
{% elif m.kind == "video" %}<video class="small" src="{{ m.data_uri }}" controls muted loop autoplay playsinline data-mime="{{ m.mime }}"></video>
{% else %}<p class="missing">not embedded: {{ m.size }} bytes</p>{% endif %}
<figcaption>{{ m.path }}{% if m.note %} ({{ m.note }}){% endif %}</figcaption></figure>{% endfor %}</div>
{% if not_embedded.get(task) %}<p class="source">{{ not_embedded[task] }} more image(s) in sub-folders of <code>samples/{{ task }}</code> (not embedded).</p>{% endif %}
{% else %}<p class="missing" data-missing="samples/{{ task }}">missing: <code>samples/{{ task }}</code></p>{% endif %}
{% endfor %}
</section>

<section id="funnel">
<h2>Curation funnel</h2>
{% if funnel %}
<p>Images per source after each curation stage (supplement G.1): metadata rows in, selected by SQL,
downloaded, decoded, kept by the score thresholds.</p>
<table id="funnel-table">
<thead><tr><th class="label">Source</th>{% for s in funnel.stages %}<th data-stage="{{ s }}">{{ s }}</th>{% endfor %}<th>kept / in</th></tr></thead>
<tbody>
{% for row in funnel.rows %}<tr data-source="{{ row.source }}"><td class="label">{{ row.source }}</td>
{% for cell in row.cells %}<td data-stage="{{ cell.stage }}" data-value="{{ cell.value }}">{{ cell.text }}{% if cell.pct is not none %}<br><span class="bar" style="width: {{ (cell.pct * 0.8)|round(1) }}px"></span> <span class="source">{{ cell.pct|round(1) }}%</span>{% endif %}</td>{% endfor %}
<td>{{ row.kept_ratio }}</td></tr>
{% endfor %}
</tbody>
</table>
{% else %}<p class="missing" data-missing="datasets/curation/funnel.json">missing: <code>datasets/curation/funnel.json</code></p>{% endif %}
</section>

<section id="lineage">
<h2>Checkpoints and lineage</h2>
{% for run in lineage %}
<h3 id="lineage-{{ run.run }}">{{ run.run }}</h3>
<table class="checkpoints" data-run="{{ run.run }}">
<thead><tr><th class="label">Checkpoint</th><th>Step</th><th>Finished</th><th class="label">Task</th><th class="label">Prior</th><th class="label">Parent</th></tr></thead>
<tbody>
{% for c in run.checkpoints %}<tr id="{{ c.anchor }}" data-path="{{ c.path }}"><td class="label">{{ c.path }}</td><td>{{ c.step if c.step is not none else '-' }}</td><td>{{ 'yes (DONE)' if c.done else 'no' }}</td><td class="label">{{ c.task }}</td><td class="label">{{ c.prior }}</td>
<td class="label">{% if c.parent_anchor %}<a href="#{{ c.parent_anchor }}">{{ c.parent }}</a>{% else %}{{ c.parent }}{% endif %}</td></tr>
{% endfor %}
</tbody>
</table>
{% if run.latest %}
<p>Latest finished: <code>{{ run.latest.path }}</code> (task {{ run.latest.task }}, step {{ run.latest.step }}).</p>
<table class="lineage" data-run="{{ run.run }}">
<thead><tr><th class="label">Key</th><th class="label">Value</th></tr></thead>
<tbody>
{% for k, v in run.latest.rows %}<tr><td class="label" data-key="{{ k }}">{{ k }}</td><td class="label">{{ v }}</td></tr>{% endfor %}
</tbody>
</table>
{% else %}<p class="missing">no finished checkpoint (no <code>DONE</code>) with a config.json in <code>models/{{ run.run }}/checkpoints</code></p>{% endif %}
{% endfor %}
{% for task in tasks if task not in lineage_tasks %}<p class="missing" data-missing="models/{{ task }}/checkpoints">missing: <code>models/{{ task }}/checkpoints</code></p>{% endfor %}
</section>
</body>
</html>
"""
