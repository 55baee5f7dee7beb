{#
  The skeleton shared by cluster, ml_train and ml_predict: the table materialization's steps
  (hooks, grants, docs, commit), with the Python side writing every output under an intermediate
  name and one short transaction swapping them all in. A failure anywhere leaves the previous
  relations and the registry as they were.
#}
{% macro sqlflow_ml_node(materialization, side_suffixes=[]) %}
  {%- set options = adapter.sqlflow_options(materialization, model.config, model.name) -%}
  {%- set target_relation = this.incorporate(type='table') -%}
  {%- set outputs = [(target_relation, load_cached_relation(this))] -%}
  {%- for suffix in side_suffixes -%}
    {%- set side = this.incorporate(path={'identifier': adapter.sqlflow_side_identifier(this.identifier, suffix)}, type='table') -%}
    {%- do outputs.append((side, adapter.get_relation(database=side.database, schema=side.schema, identifier=side.identifier))) -%}
  {%- endfor -%}

  {%- set staged = [] -%}
  {%- for relation, existing in outputs -%}
    {%- set intermediate = make_intermediate_relation(relation) -%}
    {%- set backup = make_backup_relation(relation, 'table') -%}
    {%- do drop_relation_if_exists(intermediate) -%}
    {%- do drop_relation_if_exists(backup) -%}
    {%- do staged.append({'target': relation, 'existing': existing, 'intermediate': intermediate, 'backup': backup}) -%}
  {%- endfor -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {%- set targets = {'main': staged[0].intermediate.render()} -%}
  {%- for suffix in side_suffixes -%}
    {%- do targets.update({suffix: staged[loop.index].intermediate.render()}) -%}
  {%- endfor -%}
  {%- set response = adapter.sqlflow_run(materialization, model, sql, targets, target_relation.render(),
                                          invocation_id, outputs[0][1] is not none) -%}

  {#- retrain='on_change' with nothing new: no intermediates were written, the relations stay -#}
  {%- for s in (staged if response.code != 'UNCHANGED' else []) -%}
    {%- if s.existing is not none -%}
      {%- do adapter.rename_relation(s.existing, s.backup) -%}
    {%- endif -%}
    {%- do adapter.rename_relation(s.intermediate, s.target) -%}
  {%- endfor -%}
  {% do store_result('main', response=response) %}

  {% set should_revoke = should_revoke(outputs[0][1], full_refresh_mode=True) %}
  {% do apply_grants(target_relation, config.get('grants'), should_revoke=should_revoke) %}
  {% do persist_docs(target_relation, model) %}

  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {{ adapter.commit() }}
  {%- for s in staged -%}
    {%- do drop_relation_if_exists(s.backup) -%}
  {%- endfor -%}
  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({'relations': [target_relation]}) }}
{% endmacro %}
