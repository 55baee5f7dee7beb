{#
  The skeleton shared by cluster, ml_train and ml_predict: the table materialization's steps
  (hooks, grants, docs, indexes, commit), with the Python side writing every output under an
  intermediate name and one short transaction swapping them all in. A failure anywhere leaves the
  previous relations and the registry as they were.
#}
{% macro sqlflow_ml_node(materialization, side_suffixes=[], statement=none) %}
  {#- a sqlflow node runs the materialization its clause stands for, with the clause's config -#}
  {%- set options = statement.options if statement else adapter.sqlflow_options(materialization, model.config, model.name) -%}
  {%- do sqlflow_reject_unsupported_configs(materialization) -%}
  {%- set target_relation = this.incorporate(type='table') -%}
  {#- one build of this model at a time across dbt processes; after a wait the cache may be stale -#}
  {%- set waited = adapter.sqlflow_lock(this) -%}
  {%- set existing = adapter.sqlflow_current_relation(this) if waited else load_cached_relation(this) -%}
  {%- set outputs = [(target_relation, existing)] -%}
  {%- for suffix in side_suffixes -%}
    {%- set side = this.incorporate(path={'identifier': adapter.sqlflow_side_identifier(this.identifier, suffix)}, type='table') -%}
    {%- set found = adapter.sqlflow_current_relation(side) if waited
                    else adapter.get_relation(database=side.database, schema=side.schema, identifier=side.identifier) -%}
    {%- do outputs.append((side, found)) -%}
  {%- endfor -%}
  {#- side tables of an earlier cluster build that this materialization does not write -#}
  {%- set stale = adapter.sqlflow_stale_side_tables(this, ['centroids', 'profile'] | reject('in', side_suffixes) | list) -%}
  {#- incremental ml_predict: the new rows are merged into the existing table instead of swapped in -#}
  {%- set increment = options.get('incremental', false) and existing is not none and existing.type == 'table'
                      and not should_full_refresh() -%}

  {%- set staged = [] -%}
  {%- for relation, previous in outputs -%}
    {%- set intermediate = make_intermediate_relation(relation) -%}
    {#- the backup has the existing relation's type (a view stays a view), as dbt's table materialization does -#}
    {%- set backup = make_backup_relation(relation, previous.type if previous is not none else 'table') -%}
    {%- do drop_relation_if_exists(load_cached_relation(intermediate)) -%}
    {%- do drop_relation_if_exists(load_cached_relation(backup)) -%}
    {%- do staged.append({'target': relation, 'existing': previous, 'intermediate': intermediate, 'backup': backup}) -%}
  {%- endfor -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}
  {%- set sql_header = config.get('sql_header') -%}
  {%- if sql_header -%}{%- do run_query(sql_header) -%}{%- endif -%}

  {%- set targets = {'main': staged[0].intermediate.render()} -%}
  {%- for suffix in side_suffixes -%}
    {%- do targets.update({suffix: staged[loop.index].intermediate.render()}) -%}
  {%- endfor -%}
  {%- set response = adapter.sqlflow_run(materialization, model, sql, targets, target_relation,
                                          sqlflow_ref_relations(), invocation_id, existing is not none,
                                          should_full_refresh(), (flags.EMPTY or false), increment, statement) -%}

  {#- the retrain policy kept the live version, or promote_if rejected the candidate with
      on_gate_fail='warn': no intermediates were written, the relations stay -#}
  {%- set changed = response.code not in ('UNCHANGED', 'REJECTED') -%}
  {%- if changed and increment -%}
    {%- do sqlflow_merge_increment(staged[0], options.unique_key) -%}
  {%- endif -%}
  {%- for s in (staged if changed and not increment else []) -%}
    {%- if config.get('unlogged') -%}
      {%- do run_query('alter table ' ~ s.intermediate ~ ' set unlogged') -%}
    {%- endif -%}
    {%- if s.existing is not none -%}
      {%- do adapter.rename_relation(s.existing, s.backup) -%}
    {%- endif -%}
    {%- do adapter.rename_relation(s.intermediate, s.target) -%}
  {%- endfor -%}
  {%- if changed and not increment -%}{%- do create_indexes(target_relation) -%}{%- endif -%}
  {% do store_result('main', response=response) %}

  {%- for s in staged -%}
    {% do apply_grants(s.target, config.get('grants'), should_revoke=should_revoke(s.existing, full_refresh_mode=not increment)) %}
  {%- endfor -%}
  {% do persist_docs(target_relation, model) %}
  {%- if config.persist_relation_docs() -%}
    {%- for s in staged[1:] -%}
      {%- do run_query(alter_relation_comment(s.target, 'The ' ~ side_suffixes[loop.index0] ~ ' of the '
                                    ~ materialization ~ ' model ' ~ model.name ~ ' (dbt-sqlflow side table, rebuilt with it).')) -%}
    {%- endfor -%}
  {%- endif -%}

  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {%- for relation in stale -%}
    {%- do drop_relation_if_exists(relation) -%}
  {%- endfor -%}
  {{ adapter.commit() }}
  {%- for s in staged -%}
    {%- do drop_relation_if_exists(s.backup) -%}
  {%- endfor -%}
  {%- do adapter.sqlflow_unlock(this) -%}
  {#- the model card of the version just trained (target/sqlflow/cards/), from its committed registry row -#}
  {#- a version kept by the retrain policy gets its card only where it has none yet -#}
  {%- if materialization in ('cluster', 'ml_train') and response.model_version and response.code != 'REJECTED' -%}
    {%- do adapter.sqlflow_card(this, model.name, response.model_version, missing_only=not changed, background=true) -%}
  {%- endif -%}
  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({'relations': staged | map(attribute='target') | list}) }}
{% endmacro %}


{#- dbt's delete+insert: rows of the scored keys are replaced, in the node's transaction. The job has
    checked the keys and the columns; on_schema_change='append_new_columns' / 'sync_all_columns'
    let dbt change the table's columns first. -#}
{% macro sqlflow_merge_increment(s, unique_key) %}
  {%- set on_schema_change = config.get('on_schema_change') or 'ignore' -%}
  {%- if on_schema_change in ('append_new_columns', 'sync_all_columns') -%}
    {%- do process_schema_changes(on_schema_change, s.intermediate, s.existing) -%}
  {%- endif -%}
  {%- set dest_columns = adapter.get_columns_in_relation(s.existing) -%}
  {%- do run_query(get_delete_insert_merge_sql(s.target, s.intermediate, unique_key, dest_columns, none)) -%}
  {%- do drop_relation_if_exists(s.intermediate) -%}
{% endmacro %}


{#- The models this node refs, by name: config keys that name a model (model=, pretrained_model=)
    resolve to the ref'd relation, so an alias or a custom schema is followed. -#}
{% macro sqlflow_ref_relations() %}
  {%- set refs = {} -%}
  {%- for node_id in model.depends_on.nodes -%}
    {%- set node = graph.nodes.get(node_id) -%}
    {%- if node is not none and node.resource_type == 'model' -%}
      {%- do refs.update({node.name: {'database': node.database, 'schema': node.schema,
                                      'identifier': node.alias or node.name}}) -%}
    {%- endif -%}
  {%- endfor -%}
  {{ return(refs) }}
{% endmacro %}


{#- Table configs an ML node cannot honour fail the node instead of being ignored. -#}
{% macro sqlflow_reject_unsupported_configs(materialization) %}
  {%- if model.contract and model.contract.enforced -%}
    {{ exceptions.raise_compiler_error(
         materialization ~ " model '" ~ model.name ~ "' has contract: {enforced: true}, but an ML node's columns "
         ~ "are set by the model (its outputs), not by a contract. Remove the contract, or enforce it on a view "
         ~ "or table model that selects from this one.") }}
  {%- endif -%}
{% endmacro %}


{#- dbt's own materializations, plus one step: a relation that was a cluster model loses the side
    tables (`__centroids`, `__profile`) the macros would otherwise still read. -#}
{% macro sqlflow_drop_stale_side_tables() %}
  {%- set stale = adapter.sqlflow_stale_side_tables(this, ['centroids', 'profile']) -%}
  {#- after dbt's commit, as its own backup drop: each statement commits by itself -#}
  {%- for relation in stale -%}
    {%- do drop_relation_if_exists(relation) -%}
  {%- endfor -%}
{% endmacro %}

{% materialization table, adapter='sqlflow' %}
  {%- set relations = dbt.materialization_table_default() -%}
  {%- do sqlflow_drop_stale_side_tables() -%}
  {{ return(relations) }}
{% endmaterialization %}

{% materialization view, adapter='sqlflow' %}
  {%- set relations = dbt.materialization_view_default() -%}
  {%- do sqlflow_drop_stale_side_tables() -%}
  {{ return(relations) }}
{% endmaterialization %}

{% materialization incremental, adapter='sqlflow' %}
  {%- set relations = dbt.materialization_incremental_default() -%}
  {%- do sqlflow_drop_stale_side_tables() -%}
  {{ return(relations) }}
{% endmaterialization %}
