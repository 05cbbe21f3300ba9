import streamlit as st

st.title('run_detail')
st.info('Not built yet.')
